"""A Modbus RTU slave for the unplug tests, on Debian's python3-pymodbus.

Usage: pymodbus_rtu_server.py PORT. Serves every unit id on the serial
port PORT (one end of a socat pty pair) at 9600 baud, 8N1. Holding
registers 0-99 start as 0 except 0 (1234) and 1 (5678).
"""
import logging
import sys

from pymodbus.datastore import (ModbusSequentialDataBlock, ModbusServerContext,
                                ModbusSlaveContext)
from pymodbus.server import StartSerialServer
from pymodbus.transaction import ModbusRtuFramer

logging.basicConfig(level=logging.CRITICAL)
holding = [0] * 100
holding[0], holding[1] = 1234, 5678
store = ModbusSlaveContext(
    hr=ModbusSequentialDataBlock(0, holding),
    ir=ModbusSequentialDataBlock(0, [7] * 100),
    co=ModbusSequentialDataBlock(0, [False] * 100),
    di=ModbusSequentialDataBlock(0, [True] * 100),
    zero_mode=True,
)
StartSerialServer(context=ModbusServerContext(slaves=store, single=True),
                  framer=ModbusRtuFramer, port=sys.argv[1], baudrate=9600,
                  bytesize=8, parity="N", stopbits=1, timeout=0.05)
