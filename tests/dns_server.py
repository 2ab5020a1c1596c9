"""A tiny authoritative DNS server for berth's tests, standard library only:
answers A queries for the names it is given, NXDOMAIN for any other name,
over UDP. Prints `listening` once bound.

Usage: dns_server.py ADDRESS NAME=IPV4...
"""

import socket
import struct
import sys

address = sys.argv[1]
names = dict(arg.lower().split("=", 1) for arg in sys.argv[2:])


def question(packet):
    """The queried name, type, and where the question section ends."""
    labels, at = [], 12
    while packet[at]:
        length = packet[at]
        labels.append(packet[at + 1:at + 1 + length].decode("ascii", "replace"))
        at += 1 + length
    qtype = struct.unpack("!H", packet[at + 1:at + 3])[0]
    return ".".join(labels).lower(), qtype, at + 5


server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
server.bind((address, 53))
print("listening", flush=True)
while True:
    packet, client = server.recvfrom(512)
    if len(packet) < 17:
        continue
    name, qtype, end = question(packet)
    ident = packet[:2]
    known = name in names
    answers = 1 if known and qtype == 1 else 0
    # QR, AA, RD copied; RCODE 3 (NXDOMAIN) for a name it does not have.
    flags = 0x8400 | (struct.unpack("!H", packet[2:4])[0] & 0x0100) | (0 if known else 3)
    reply = ident + struct.pack("!HHHHH", flags, 1, answers, 0, 0) + packet[12:end]
    if answers:
        reply += b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + socket.inet_aton(names[name])
    server.sendto(reply, client)
