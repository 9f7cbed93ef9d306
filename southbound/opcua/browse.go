package opcua

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/gopcua/opcua/ua"
)

// maxBrowseEntries bounds one Browse answer.
const maxBrowseEntries = 5000

// Browse lists the children of nodeID (default: the Objects folder, i=85)
// on the named server's session: for each, its NodeId, names, node class,
// and for variables its data type, value and access level. It fails when
// the server is not connected. Entries have a BrowsePath when nodeID is
// Objects (see BrowsePath for deeper nodes).
func (s *Service) Browse(ctx context.Context, server, nodeID string) ([]BrowseEntry, error) {
	return s.BrowsePath(ctx, server, nodeID, "")
}

// BrowsePath is Browse for a node whose browse path from Objects the
// caller knows (as the BrowsePath of the entry it came from), so that the
// entries carry their own browse paths.
func (s *Service) BrowsePath(ctx context.Context, server, nodeID, path string) ([]BrowseEntry, error) {
	srv := s.byName[server]
	if srv == nil {
		return nil, fmt.Errorf("opcua: browse: no server %q", server)
	}
	start := ua.NewNumericNodeID(0, 85)
	if nodeID != "" {
		id, err := ParseNodeID(nodeID)
		if err != nil {
			return nil, fmt.Errorf("opcua: browse %s: %w", server, err)
		}
		start = id
		if id.Namespace() != 0 || id.IntID() != 85 || id.Type() == ua.NodeIDTypeString {
			if path == "" {
				path = "-" // unknown: no browse paths
			}
		}
	}
	c := srv.client.Load()
	if c == nil {
		return nil, fmt.Errorf("opcua: browse %s: the server is offline", server)
	}
	req := &ua.BrowseRequest{
		View:                          &ua.ViewDescription{ViewID: ua.NewTwoByteNodeID(0)},
		RequestedMaxReferencesPerNode: 1000,
		NodesToBrowse: []*ua.BrowseDescription{{
			NodeID:          start,
			BrowseDirection: ua.BrowseDirectionForward,
			ReferenceTypeID: ua.NewNumericNodeID(0, 33), // HierarchicalReferences
			IncludeSubtypes: true,
			NodeClassMask:   uint32(ua.NodeClassObject | ua.NodeClassVariable | ua.NodeClassMethod | ua.NodeClassView),
			ResultMask:      uint32(ua.BrowseResultMaskAll),
		}},
	}
	var refs []*ua.ReferenceDescription
	var res *ua.BrowseResponse
	err := srv.call(ctx, func(ctx context.Context) error {
		var err error
		res, err = c.Browse(ctx, req)
		return err
	})
	if err != nil {
		srv.countError(err)
		return nil, fmt.Errorf("opcua: browse %s: %w", server, err)
	}
	if len(res.Results) != 1 {
		return nil, fmt.Errorf("opcua: browse %s: %d results for one node", server, len(res.Results))
	}
	r := res.Results[0]
	if !isGood(r.StatusCode) {
		return nil, fmt.Errorf("opcua: browse %s %s: %s", server, formatNodeID(start), statusName(r.StatusCode))
	}
	refs = append(refs, r.References...)
	cp := r.ContinuationPoint
	for len(cp) > 0 && len(refs) < maxBrowseEntries {
		var next *ua.BrowseNextResponse
		err := srv.call(ctx, func(ctx context.Context) error {
			var err error
			next, err = c.BrowseNext(ctx, &ua.BrowseNextRequest{ContinuationPoints: [][]byte{cp}})
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("opcua: browse %s: %w", server, err)
		}
		if len(next.Results) != 1 || !isGood(next.Results[0].StatusCode) {
			break
		}
		refs = append(refs, next.Results[0].References...)
		cp = next.Results[0].ContinuationPoint
	}
	if len(cp) > 0 {
		_ = srv.call(ctx, func(ctx context.Context) error {
			_, err := c.BrowseNext(ctx, &ua.BrowseNextRequest{ContinuationPoints: [][]byte{cp}, ReleaseContinuationPoints: true})
			return err
		})
	}
	refs = refs[:min(len(refs), maxBrowseEntries)]

	out := make([]BrowseEntry, 0, len(refs))
	var vars []int
	for _, ref := range refs {
		if ref == nil || ref.NodeID == nil || ref.NodeID.NodeID == nil {
			continue
		}
		e := BrowseEntry{
			NodeID:      formatNodeID(ref.NodeID.NodeID),
			BrowseName:  formatBrowseName(ref.BrowseName),
			NodeClass:   nodeClassName(ref.NodeClass),
			HasChildren: ref.NodeClass == ua.NodeClassObject || ref.NodeClass == ua.NodeClassView,
		}
		if ref.DisplayName != nil {
			e.DisplayName = ref.DisplayName.Text
		}
		if path != "-" && ref.BrowseName != nil {
			e.BrowsePath = strings.TrimPrefix(path+"/"+formatBrowseName(ref.BrowseName), "/")
		}
		if ref.NodeClass == ua.NodeClassVariable {
			e.HasChildren = true // variables may have properties
			vars = append(vars, len(out))
		}
		out = append(out, e)
	}
	// Data type, value rank, value and access level of the variables.
	attrs := []ua.AttributeID{ua.AttributeIDDataType, ua.AttributeIDValueRank, ua.AttributeIDValue, ua.AttributeIDUserAccessLevel}
	for startVar := 0; startVar < len(vars); startVar += maxNodesPerRequest / len(attrs) {
		chunk := vars[startVar:min(startVar+maxNodesPerRequest/len(attrs), len(vars))]
		rreq := &ua.ReadRequest{TimestampsToReturn: ua.TimestampsToReturnNeither}
		for _, i := range chunk {
			id, _ := ParseNodeID(out[i].NodeID)
			if id == nil {
				id = ua.NewNumericNodeID(0, 0)
			}
			for _, a := range attrs {
				rreq.NodesToRead = append(rreq.NodesToRead, &ua.ReadValueID{NodeID: id, AttributeID: a})
			}
		}
		rres, err := srv.read(ctx, c, rreq)
		if err != nil {
			srv.countError(err)
			return out, nil // the names are worth showing
		}
		for k, i := range chunk {
			e := &out[i]
			dt, rank, val, acc := rres.Results[k*4], rres.Results[k*4+1], rres.Results[k*4+2], rres.Results[k*4+3]
			if isGood(dt.Status) && dt.Value != nil {
				if id, ok := dt.Value.Value().(*ua.NodeID); ok {
					if b, ok := dataTypeBuiltin(id); ok {
						e.DataType = b.name
					} else {
						e.DataType = formatNodeID(id)
					}
				}
			}
			if isGood(rank.Status) && rank.Value != nil {
				if r, ok := rank.Value.Value().(int32); ok && r >= 0 {
					e.Array = true
				}
			}
			if isGood(val.Status) || isUncertain(val.Status) {
				if b, err := (conv{scale: 1, decimals: -1}).appendVariant(nil, val.Value); err == nil && len(b) <= 4096 {
					e.Value = json.RawMessage(b)
				}
			}
			if val.Status != ua.StatusOK {
				e.Status = statusName(val.Status)
			}
			if isGood(acc.Status) && acc.Value != nil {
				if a, ok := acc.Value.Value().(uint8); ok {
					e.Access = accessName(ua.AccessLevelType(a))
				}
			}
		}
	}
	return out, nil
}

func accessName(a ua.AccessLevelType) string {
	r, w := a&ua.AccessLevelTypeCurrentRead != 0, a&ua.AccessLevelTypeCurrentWrite != 0
	switch {
	case r && w:
		return "RW"
	case r:
		return "RO"
	case w:
		return "WO"
	}
	return ""
}

func nodeClassName(nc ua.NodeClass) string {
	switch nc {
	case ua.NodeClassObject:
		return "Object"
	case ua.NodeClassVariable:
		return "Variable"
	case ua.NodeClassMethod:
		return "Method"
	case ua.NodeClassObjectType:
		return "ObjectType"
	case ua.NodeClassVariableType:
		return "VariableType"
	case ua.NodeClassReferenceType:
		return "ReferenceType"
	case ua.NodeClassDataType:
		return "DataType"
	case ua.NodeClassView:
		return "View"
	}
	return "Unspecified"
}
