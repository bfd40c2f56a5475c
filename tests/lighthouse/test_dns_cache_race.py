"""A data change that lands between computing an answer and caching it must not leave a stale answer cached."""

from __future__ import annotations

import dns.message
import dns.rrset

from submariner.lighthouse.dns.answers import AnswerCache
from submariner.lighthouse.dns.plugin import AnswerInfo, CachePolicy, CacheScope


def _reply(query: dns.message.Message, ip: str) -> bytes:
    reply = dns.message.make_response(query)
    reply.answer.append(dns.rrset.from_text(query.question[0].name, 5, "IN", "A", ip))
    return reply.to_wire()


def _info() -> AnswerInfo:
    return AnswerInfo(qtype=1, qclass=1, rcode=0, plugin="lighthouse", zone="clusterset.local.", server="dns://:0",
                      do=False, bufsize=512)


def test_answer_computed_before_a_change_is_not_served_after_it() -> None:
    query = dns.message.make_query("a.ns.svc.clusterset.local.", "A", use_edns=False)
    raw = query.to_wire()
    scope = CacheScope("lighthouse")
    cache = AnswerCache()

    policy = CachePolicy(scope)  # the answer is computed now...
    scope.invalidate()  # ...an informer thread applies a change...
    assert not cache.insert(raw, [_reply(query, "10.0.0.1")], scope, policy.max_age, _info(), policy.generation)
    assert cache.lookup(raw) is None  # ...so the answer is already stale and is not stored.

    fresh = CachePolicy(scope)
    cache.insert(raw, [_reply(query, "10.0.0.2")], scope, fresh.max_age, _info(), fresh.generation)
    hit = cache.lookup(raw)
    assert hit is not None and dns.message.from_wire(hit[0]).answer[0][0].address == "10.0.0.2"
