package config

import "fmt"

// opcuaClashes reports the OPC UA servers whose name is also a Modbus
// device's or a serial sensor's under the same topic prefix: both would
// publish on {prefix}/{name}/… and take each other's set commands.
func (s Southbound) opcuaClashes() []error {
	prefix := func(p string) string {
		if p == "" {
			return "southbound"
		}
		return p
	}
	ua := prefix(s.OPCUA.Prefix)
	var errs []error
	for i, srv := range s.OPCUA.Servers {
		if ua == prefix(s.Modbus.Prefix) {
			for j, d := range s.Modbus.Devices {
				if d.Name == srv.Name {
					errs = append(errs, fmt.Errorf("southbound.opcua.servers[%d].name: %q is also the name of southbound.modbus.devices[%d], under the same topic prefix %q: rename one", i, srv.Name, j, ua))
				}
			}
		}
		if ua == prefix(s.Serial.Prefix) {
			for j, sn := range s.Serial.Sensors {
				if sn.Name == srv.Name {
					errs = append(errs, fmt.Errorf("southbound.opcua.servers[%d].name: %q is also the name of southbound.serial.sensors[%d], under the same topic prefix %q: rename one", i, srv.Name, j, ua))
				}
			}
		}
	}
	return errs
}
