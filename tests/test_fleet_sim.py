"""
The fleet simulation (``python -m framedclient.bench fleet-sim``), scaled
down: many clients, one slow and one dead host, every pick policy.
"""

from __future__ import annotations

import attrs
import pytest

from framedclient.bench.__main__ import main as bench_main
from framedclient.bench.fleetsim import (
    POLICIES,
    FleetConfig,
    PolicyResult,
    by_share_of_clients,
    rule_delays,
    simulate,
)

#: 5 clients x 10 hosts for a simulated minute: about 6,000 requests per
#: policy, a second or two of real time for all four.
SMALL = FleetConfig(clients=5, hosts=10, rate=20.0, duration=60.0)


@pytest.fixture(scope="module")
def results() -> dict[str, PolicyResult]:
    return {policy: simulate(SMALL, policy) for policy in POLICIES}


def test_no_request_is_lost_sent_twice_or_answered_wrong(results):
    for policy, r in results.items():
        assert r.requests > 5_000, policy
        assert (r.lost, r.twice, r.wrong) == (0, 0, 0), policy
        assert r.ok + sum(r.failed.values()) == r.requests, policy
        assert set(r.failed) <= {"timeout", "connection_lost"}, policy


def test_load_aware_policies_keep_99_percent_ok_despite_the_dead_host(results):
    # A silent host's connections fill up with unanswered requests, so the
    # policies that look at load stop picking it before health ejects it.
    for policy in ("p2c", "least_loaded"):
        assert results[policy].ok_rate >= 0.99, (policy, results[policy])
        assert results[policy].to_dead < results["round_robin"].to_dead, policy


def test_health_keeps_requests_off_the_dead_host():
    # Without ejection, round robin keeps handing the dead host its share.
    off = simulate(attrs.evolve(SMALL, health=False), "round_robin")
    on = simulate(SMALL, "round_robin")
    share = off.requests / SMALL.hosts
    assert off.to_dead > share / 2
    assert on.to_dead < off.to_dead / 4
    assert on.ok_rate > off.ok_rate
    assert (off.lost, off.twice, off.wrong) == (0, 0, 0)


def test_ketama_sends_the_dead_hosts_keys_elsewhere_once_it_is_ejected(results):
    r = results["ketama"]
    # Random keys put about 1/10 of the requests on the dead host's arcs;
    # after the first ejections they go to the next host on the ring.
    assert r.to_dead < r.requests / SMALL.hosts / 4
    assert r.ok_rate > 0.98


def test_p2c_sees_the_slow_host_and_the_policies_blind_to_latency_do_not(results):
    # The default pick compares peak-EWMA latency x (in flight + 1): the
    # 200 ms host gets a trial now and then, and the tail stays fast.
    p2c = results["p2c"]
    assert p2c.p99 < SMALL.slow_delay / 20
    assert p2c.to_slow < p2c.requests * 0.01
    # The others see in-flight counts (ties at this load) or nothing:
    # about 1/10 of the requests land on the slow host and set the tail.
    for policy in ("least_loaded", "round_robin", "ketama"):
        assert results[policy].p99 >= SMALL.slow_delay, policy
        assert results[policy].to_slow > results[policy].requests / SMALL.hosts / 2


def test_hedging_hides_the_slow_host_from_a_policy_blind_to_latency(results):
    hedged = simulate(attrs.evolve(SMALL, hedge_after=0.01), "least_loaded")
    assert hedged.p99 < SMALL.slow_delay / 4
    assert hedged.ok_rate >= results["least_loaded"].ok_rate
    # A hedge goes to another host: still no host sees a request twice.
    assert (hedged.lost, hedged.twice, hedged.wrong) == (0, 0, 0)


def test_the_same_seed_gives_the_same_results():
    config = FleetConfig(clients=3, hosts=5, rate=20.0, duration=10.0, seed=7)
    a, b = simulate(config, "p2c"), simulate(config, "p2c")
    assert attrs.evolve(a, seconds=0) == attrs.evolve(b, seconds=0)


def test_the_command_prints_a_markdown_table(capsys):
    code = bench_main(
        [
            "fleet-sim",
            *("--clients", "2", "--hosts", "4", "--duration", "3"),
            *("--policies", "p2c,ketama"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    rows = [line for line in out.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| policy | requests | ok |")
    assert [row.split(" | ")[0] for row in rows[1:]] == ["| p2c", "| ketama"]


def test_the_command_runs_several_seeds_and_shows_what_each_client_saw(capsys):
    code = bench_main(
        [
            "fleet-sim",
            *("--clients", "2", "--hosts", "6", "--duration", "5"),
            *("--scenario", "flaky", "--policies", "p2c"),
            *("--seeds", "2", "--success-rate-min-volume", "3"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "(seed 1)" in out and "(seed 2)" in out
    assert out.count("success_rate_min_volume=3") == 2
    heads = [line for line in out.splitlines() if line.startswith("| policy")]
    assert len(heads) == 2
    assert heads[0].endswith(
        "| first failure seen by half / 90 % / all, s "
        "| rule's delay median / max, s |"
    )


def test_bad_arguments_get_a_clear_error(capsys):
    with pytest.raises(SystemExit) as exc:
        bench_main(["fleet-sim", "--hosts", "2"])
    assert exc.value.code == 2
    assert "--hosts must be at least 3" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench_main(["fleet-sim", "--policies", "p2c,fastest"])
    assert "unknown policies fastest" in capsys.readouterr().err


def test_the_heap_clock_runs_timers_like_twisteds_clock():
    # The simulation's clock must keep Clock's contract, or every figure
    # in the table is off: order by time then by scheduling, cancel,
    # reset and delay.
    from framedclient.bench.fleetsim import _HeapClock

    clock = _HeapClock()
    ran: list[str] = []
    clock.callLater(2, ran.append, "b")
    clock.callLater(1, ran.append, "a")
    clock.callLater(2, ran.append, "b2")
    gone = clock.callLater(1.5, ran.append, "cancelled")
    later = clock.callLater(0.5, ran.append, "reset")
    pushed = clock.callLater(0.7, ran.append, "delayed")
    gone.cancel()
    later.reset(3)
    pushed.delay(3)
    assert clock.next_time() == 1
    assert len(clock.getDelayedCalls()) == 5
    clock.advance(2)
    assert ran == ["a", "b", "b2"]
    clock.advance(1)
    assert ran[3:] == ["reset"]
    clock.advance(0.7)
    assert ran[4:] == ["delayed"]
    assert clock.getDelayedCalls() == [] and clock.next_time() == float("inf")


# -- the scenarios of issue 20, scaled down --------------------------------------------


def test_a_host_failing_30_percent_at_random_is_ejected_by_success_rate():
    # Never 5 failures in a row: consecutive-failure ejection alone would
    # never see it.  Issue 20's target: ejected within 10 s, fleet ok
    # >= 99.5 %, and no healthy host ejected.
    flaky = attrs.evolve(SMALL, scenario="flaky")
    on = simulate(flaky, "p2c")
    off = simulate(attrs.evolve(flaky, health=False), "p2c")
    assert (on.lost, on.twice, on.wrong) == (0, 0, 0)
    assert set(on.failed) == {"remote_error"}
    assert on.ejected_all is not None and on.ejected_all <= 10.0
    assert on.false_ejections == 0
    assert off.ejected_half is None
    # About 1/10 of the requests at 30 % is 3 % failed without ejection.
    assert off.ok_rate < 0.98 < 0.995 <= on.ok_rate


def test_a_client_ejects_the_flaky_host_soon_after_it_first_sees_it_fail():
    # What limits a client is its own evidence: a failure of that host.
    # The rule must not add to it by waiting for more requests there (or
    # on the other hosts) than its judgement needs: with a volume of 5,
    # the clients here waited up to 2.7 s after their first failure.
    r = simulate(attrs.evolve(SMALL, scenario="flaky"), "p2c")
    for failed, ejected in zip(r.first_failure, r.ejected_at, strict=True):
        assert failed is not None and ejected is not None
        assert failed <= ejected, "no ejection without a failure seen"
    delays = rule_delays(r)
    assert len(delays) == SMALL.clients
    assert max(delays) <= 1.5, delays


@pytest.mark.slow
def test_at_full_scale_each_client_ejects_the_flaky_host_once_it_has_seen_it_fail():
    # Issue 20's fleet: 50 clients x 20 hosts, 1 request a second from each
    # client to each host.  "Every client within 10 s" cannot hold for
    # every seed: a client sees no failure in its first 10 s there with
    # probability e^-3 (5 %), so all 50 have seen one by then with
    # probability 0.95^50 (8 %); here the last saw its first at 17 s.
    # What holds: the rule adds next to nothing to the evidence, half the
    # clients eject it within 4 s and 90 % within 10 s, the last one as
    # soon as it has seen a failure, and nothing else is ejected.
    r = simulate(FleetConfig(scenario="flaky"), "p2c")
    assert (r.lost, r.twice, r.wrong) == (0, 0, 0)
    assert r.ok_rate >= 0.995
    assert r.false_ejections == 0
    half, most, every = by_share_of_clients(r.ejected_at)
    assert half is not None and half <= 4.0
    assert most is not None and most <= 10.0
    last_evidence = max(t for t in r.first_failure if t is not None)
    assert every is not None and every <= last_evidence + 1.0
    delays = rule_delays(r)
    assert len(delays) == 50
    assert delays[len(delays) // 2] <= 0.1, "the median client: at once"


def test_healthy_hosts_with_rare_errors_are_ejected_at_most_once_per_error():
    # Every other host fails 0.1 % at random too.  At a client's 2 requests
    # a second per host, one error among few requests makes a host an
    # outlier (as in Envoy); what must not happen is an ejection without a
    # new failure (judging again on successes after a revival, say), or
    # the flaky host going unseen among the noise.
    noisy = attrs.evolve(SMALL, scenario="flaky", background_errors=0.001)
    r = simulate(noisy, "p2c")
    assert (r.lost, r.twice, r.wrong) == (0, 0, 0)
    assert r.healthy_errors > 0
    assert r.false_ejections <= r.healthy_errors
    assert r.ejected_all is not None
    # (0.1 % of the requests fail on healthy hosts whatever the rule does.)
    assert r.ok_rate >= 0.99


def test_a_host_that_slows_down_for_10_s_gets_its_share_back_within_10_s():
    slowdown = attrs.evolve(SMALL, scenario="slowdown")
    r = simulate(slowdown, "p2c")
    assert (r.lost, r.twice, r.wrong) == (0, 0, 0)
    assert r.share_back is not None and r.share_back <= 10.0
    # While slow it got next to nothing: less than a tenth of its share of
    # the 10 s spell are missing from the whole run's count.
    blind = simulate(slowdown, "least_loaded")
    assert blind.to_slow - r.to_slow > 0.6 * blind.requests / SMALL.hosts / 6


def test_one_slow_host_among_healthy_ones_gets_at_most_half_a_percent():
    # Issue 20's target: p99 <= 5 ms, <= 0.5 % of the requests on the slow
    # host (its fair share here is 10 %).
    r = simulate(attrs.evolve(SMALL, scenario="slow"), "p2c")
    assert r.ok_rate == 1.0 and (r.lost, r.twice, r.wrong) == (0, 0, 0)
    assert r.p99 <= 0.005
    assert r.to_slow <= r.requests * 0.005
    assert r.false_ejections == 0
