"""Which TCP sockets a set of processes listens on, read from /proc (Linux; no psutil needed).

``listening_sockets(pids)`` -> ``[(pid, ip, port)]`` for every LISTEN socket (IPv4 and IPv6) owned by one of
``pids``; ``process_tree(root)`` gives a pid and all its descendants; ``is_loopback(ip)`` accepts 127.0.0.0/8,
::1 and the IPv4-mapped ``::ffff:127.x.y.z``.
"""

from __future__ import annotations

import ipaddress
import os
import socket


def _parents() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = open(f"/proc/{entry}/stat").read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def process_tree(root: int) -> list[int]:
    children, out, todo = _parents(), [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def _address(hex_address: str, v6: bool) -> tuple[str, int]:
    ip_hex, port_hex = hex_address.split(":")
    raw = bytes.fromhex(ip_hex)
    if v6:  # four little-endian 32-bit words
        raw = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
        return socket.inet_ntop(socket.AF_INET6, raw), int(port_hex, 16)
    return socket.inet_ntop(socket.AF_INET, raw[::-1]), int(port_hex, 16)


def listening_sockets(pids) -> list[tuple[int, str, int]]:
    owner: dict[str, int] = {}
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                owner[link[8:-1]] = pid
    found = []
    for table, v6 in (("tcp", False), ("tcp6", True)):
        for line in open(f"/proc/net/{table}").read().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in owner:  # 0A = LISTEN
                found.append((owner[fields[9]], *_address(fields[1], v6)))
    return found


def is_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def describe(found) -> list[str]:
    lines = []
    for pid, ip, port in found:
        try:
            name = open(f"/proc/{pid}/comm").read().strip()
        except OSError:
            name = "?"
        lines.append(f"{name}[{pid}] {ip}:{port}")
    return lines
