package modbus

import (
	"fmt"
	"strconv"
)

// Device manuals print Modbus addresses in the Modicon convention: a
// 1-based register number whose first digit names the table, 40001 for the
// first holding register. The protocol (and a point's register + address)
// uses the table and a 0-based address: holding 0. ParseRef and FormatRef
// convert between the two so that a technician can type what the manual
// says (point field `ref`) and see both forms.
//
//	manual    5 digits         6 digits           stored
//	0xxxx     00001–09999      000001–065536      coil, address − 1
//	1xxxx     10001–19999      100001–165536      discrete
//	3xxxx     30001–39999      300001–365536      input
//	4xxxx     40001–49999      400001–465536      holding

// refTables maps the leading digit of a reference to its register table.
var refTables = map[byte]string{'0': RegCoil, '1': RegDiscrete, '3': RegInput, '4': RegHolding}

// ParseRef parses a Modicon reference ("40001", "300010") into the register
// table and the 0-based protocol address.
func ParseRef(ref string) (register string, address int, err error) {
	if len(ref) != 5 && len(ref) != 6 {
		return "", 0, fmt.Errorf("reference %q: want 5 digits (40001) or 6 digits (400001)", ref)
	}
	for i := 0; i < len(ref); i++ {
		if ref[i] < '0' || ref[i] > '9' {
			return "", 0, fmt.Errorf("reference %q: want digits only, like 40001", ref)
		}
	}
	register, ok := refTables[ref[0]]
	if !ok {
		return "", 0, fmt.Errorf("reference %q: the first digit names the table: 0 coil, 1 discrete input, 3 input register, 4 holding register", ref)
	}
	n, _ := strconv.Atoi(ref[1:]) // digits only: cannot fail
	if n < 1 || n > 65536 {
		return "", 0, fmt.Errorf("reference %q: register numbers start at %c0001 (the 1st); %q is outside 1–65536", ref, ref[0], ref[1:])
	}
	return register, n - 1, nil
}

// FormatRef returns the Modicon reference of a register and 0-based
// address: 5 digits where they suffice, else 6 ("" for an unknown table or
// an address outside 0–65535).
func FormatRef(register string, address int) string {
	if address < 0 || address > 65535 {
		return ""
	}
	for d, r := range refTables {
		if r == register {
			if address+1 <= 9999 {
				return fmt.Sprintf("%c%04d", d, address+1)
			}
			return fmt.Sprintf("%c%05d", d, address+1)
		}
	}
	return ""
}
