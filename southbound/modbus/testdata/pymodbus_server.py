"""A Modbus TCP slave for the integration test, on Debian's python3-pymodbus.

Usage: pymodbus_server.py PORT. Holding registers 0-99 start as 0 except
0-1 (FLOAT32 21.5, big-endian), 10 (1234) and 20 (0x8001); coils 0-9 are off.
"""
import struct
import sys

from pymodbus.datastore import (ModbusSequentialDataBlock, ModbusServerContext,
                                ModbusSlaveContext)
from pymodbus.server import StartTcpServer

port = int(sys.argv[1])
holding = [0] * 100
holding[0], holding[1] = struct.unpack(">HH", struct.pack(">f", 21.5))
holding[10] = 1234
holding[20] = 0x8001
store = ModbusSlaveContext(
    hr=ModbusSequentialDataBlock(0, holding),
    ir=ModbusSequentialDataBlock(0, [7] * 100),
    co=ModbusSequentialDataBlock(0, [False] * 100),
    di=ModbusSequentialDataBlock(0, [True] * 100),
    zero_mode=True,
)
StartTcpServer(context=ModbusServerContext(slaves=store, single=True), address=("127.0.0.1", port))
