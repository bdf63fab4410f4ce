#!/bin/sh
# Seeds the (uncommitted) corpora with a few valid inputs; run from fuzz/.
set -e
mkdir -p corpus/publish_body corpus/replay_trace corpus/policy
printf '%s' '{"tenant_id":"acme","provider_id":"sms-eu","message_id":"order-42","payload":{"any":"json"}}' > corpus/publish_body/valid
printf '%s' '{"tenant_id":"acme","payload":[1,2.5,null,"x",{"a":[]}]}' > corpus/publish_body/no-provider
printf '%s' '{"tenant_id":"a.b","provider_id":"","message_id":"has space","payload":1}' > corpus/publish_body/bad-ids
cp ../examples/*.jsonl corpus/replay_trace/
printf '%s\n' '{"t":0,"op":"execute","id":"r1","attempts":["failure","timeout","success"],"attempt_latency_ms":5}' '{"op":"delays","retries":[1,2,64],"seed":7}' '{"t":0,"op":"acquire","id":"c1","tenant":"t","provider":"p"}' '{"t":40,"op":"complete","id":"c1","outcome":"success","tenant":"t","provider":"p"}' '{"t":50,"op":"admin","action":"force_open"}' '{"t":100,"op":"state"}' > corpus/replay_trace/ops
# policy inputs: 16 bytes (admission mask, random) then the policy text
{ printf '\377\377\377\377\377\377\377\377\007\000\000\000\000\000\000\000'; printf '%s' '{"providers":[{"id":"p1","weight":3},{"id":"p2","weight":1},{"id":"p3","weight":0}],"fallbacks":[{"on":"circuit_open","from":"p1","to":"p3"},{"on":"retries_exhausted","to":"p2"}],"sticky":{"ttl_secs":60},"circuit_breaker":{"failure_threshold":3},"retry":{"max_attempts":2},"degraded_mode":"reject"}'; } > corpus/policy/json
{ printf '\000\000\000\000\000\000\000\000\003\000\000\000\000\000\000\000'; printf '%s\n' 'degraded_mode = "outbox"' '[[providers]]' 'id = "a"' '[[providers]]' 'id = "b"' 'weight = 2' '[[fallbacks]]' 'on = "circuit_open"' 'to = "c"' '[circuit_breaker]' 'open_timeout_ms = 1000'; } > corpus/policy/toml
