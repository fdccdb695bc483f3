"""The per-packet parts of the overhead benchmark: the core's replayed transfers measure
each side alone and notice when a replay differs from its recording; the udp path falls
back loudly to loopback where network namespaces cannot be made. No timing is asserted."""

from __future__ import annotations

from io import StringIO

import pytest

from benchmarks import _core_cost, _peer, overhead, run
from benchmarks._common import Progress


def test_a_replayed_side_sends_what_the_recording_sent_and_costs_cpu() -> None:
    recording = _core_cost.record(_core_cost.Workload("bulk", 16 * 1024, 20))
    # 16 KiB in 1,472-byte packets (MTU 1500, IPv4): 12 DATA chunks of one packet each.
    assert recording.data_packets == 20 * 12
    assert recording.sack_packets > 0
    assert _core_cost.replay(recording, "sender") >= 0.0
    assert _core_cost.replay(recording, "receiver") >= 0.0


def test_small_messages_are_bundled_many_to_a_packet() -> None:
    row = _core_cost.measure(_core_cost.Workload("small", 100, 500), rounds=1)
    assert row["messages_per_packet"] > 10
    assert row["send_us_per_packet"] > 0 and row["receive_us_per_packet"] > 0


def test_a_replay_that_sends_other_packets_is_an_error() -> None:
    recording = _core_cost.record(_core_cost.Workload("small", 100, 50))
    recording.receiver_out[-1] = b"not what was sent"
    with pytest.raises(RuntimeError, match="other packets"):
        _core_cost.replay(recording, "receiver")


async def test_without_namespaces_the_udp_path_says_so_and_measures_loopback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(_peer, "unavailable", lambda: "not root (pretend)")
    args = run.module_arguments(overhead, quick=True)
    rows, status = await overhead._measure_paths(args, Progress(StringIO()))
    assert status == "not root (pretend)"
    assert {row["path"] for row in rows} == {"loopback"}
    assert {row["workload"] for row in rows} == set(overhead.PATH_WORKLOADS)
    assert all(row["both_us_per_packet"] > 0 for row in rows)
    assert "CANNOT RUN HERE" in capsys.readouterr().err
