"""Ports for our children: outside the kernel's ephemeral range, never handed out twice while reserved."""

from __future__ import annotations

import json
import multiprocessing
import socket
from pathlib import Path

import pytest

from nimify import ports


def test_candidates_avoid_the_ephemeral_range() -> None:
    candidates = ports.candidate_ports((32768, 60999))
    assert candidates[0] == ports.LOWEST
    assert not any(32768 <= port <= 60999 for port in candidates)
    assert 61000 in candidates and 32767 in candidates


def test_a_kernel_whose_range_covers_almost_everything_leaves_the_whole_range() -> None:
    assert len(ports.candidate_ports((1024, 65000))) == ports.HIGHEST - ports.LOWEST + 1


def test_an_unreadable_range_is_linux_default(tmp_path: Path) -> None:
    assert ports.ephemeral_range(tmp_path / "absent") == (32768, 60999)
    (tmp_path / "range").write_text("40000\t50000\n")
    assert ports.ephemeral_range(tmp_path / "range") == (40000, 50000)


def test_ports_are_free_distinct_and_outside_the_kernels_range(tmp_path: Path) -> None:
    low, high = ports.ephemeral_range()
    chosen = ports.free_ports(20, table=tmp_path / "table.json")
    assert len(set(chosen)) == 20
    for port in chosen:
        assert not low <= port <= high or len(ports.candidate_ports((low, high))) < ports.FEWEST
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_a_held_port_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A free port outside the kernel's range (nothing takes it behind our back), and one held here.
    (free,) = ports.free_ports(1, table=tmp_path / "other.json")
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        taken = held.getsockname()[1]
        monkeypatch.setattr(ports, "candidate_ports", lambda _: [taken, free])
        assert ports.free_ports(1, table=tmp_path / "table.json") == [free]


def _pick(table: str) -> list[int]:
    return ports.free_ports(50, table=Path(table))


def test_processes_side_by_side_never_get_the_same_port(tmp_path: Path) -> None:
    table = str(tmp_path / "table.json")
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        picked = [port for chunk in pool.map(_pick, [table] * 8) for port in chunk]
    assert len(picked) == len(set(picked)) == 400


def test_a_reservation_expires(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    table = tmp_path / "table.json"
    # Two ports nothing holds now, reserved machine-wide meanwhile (fixed numbers were taken once by a
    # process of another test running beside this one).
    pair = ports.free_ports(2)
    monkeypatch.setattr(ports, "candidate_ports", lambda _: pair)
    first = ports.free_ports(2, table=table)
    with pytest.raises(OSError, match="no 1 free TCP ports"):
        ports.free_ports(1, table=table)
    # The same reservations, their time up.
    table.write_text(json.dumps(dict.fromkeys(json.loads(table.read_text()), 0.0)))
    assert sorted(ports.free_ports(2, table=table)) == sorted(first)
