#!/usr/bin/env bash
# A resource policy from a config file, changed while the server runs.
# Needs: a running `flotilla serve --config flotilla.json`, FLOTILLA_URL, FLOTILLA_API_KEY.
set -euo pipefail
API="$FLOTILLA_URL/api/v2/orchestrator"
H=(-H "X-API-Key: $FLOTILLA_API_KEY" -H "content-type: application/json")

echo "== the policy in force (from flotilla.json)"
curl -sf "${H[@]}" "$API/resources/config" | jq -c .

echo "== three calls on the partner-api key (2/min): two run, the third waits"
ids=()
for i in 1 2 3; do
  ids+=("$(curl -sf "${H[@]}" "$API/tasks/submit" -d '{
      "type": "tool_call",
      "payload": {"tool_name": "echo", "tool_input": "call '"$i"'"},
      "rate_limit_key": "partner-api",
      "tenant": "acme"
    }' | jq -r .task_id)")
done
# Follow the second one to its end over Server-Sent Events.
curl -sfN --max-time 20 "${H[@]}" "$API/tasks/${ids[1]}/events" | grep -m1 -q '^event: task:succeeded'
third=$(curl -sf "${H[@]}" "$API/tasks/${ids[2]}")
echo "$third" | jq -c '{status, waiting_for: [.waiting_for[] | {kind, key, message}]}'
[[ $(echo "$third" | jq -r .status) == queued ]]
echo "$third" | jq -e '.waiting_for[] | select(.kind == "rate_limit" and .key == "partner-api")' >/dev/null

echo "== raise the limit while it runs: the waiting call goes at once; the 2 calls stay counted"
curl -sf -X PUT "${H[@]}" "$API/resources/config" -d "$(jq '.resources + {tenantWeights}' flotilla.json |
  jq '.limits["partner-api"] = ["5/min"]')" | jq -c '{applied, restart_required}'
curl -sfN --max-time 20 "${H[@]}" "$API/tasks/${ids[2]}/events" | grep -m1 -q '^event: task:succeeded'
curl -sf "${H[@]}" "$API/resources/stats" |
  jq -c '{limit: .providers["partner-api"].limits[0] | {name, limit, used, remaining},
          budgets: [.budgets[] | {name, used: .used.requests, remaining: .remaining.requests}]}'
curl -sf "${H[@]}" "$API/resources/stats" | jq -e '.providers["partner-api"].limits[0] | .limit == 5 and .used == 3' >/dev/null

echo "== a bad policy is refused, naming the setting; nothing changes"
code=$(curl -s -o /tmp/flotilla-bad-policy.json -w '%{http_code}' -X PUT "${H[@]}" "$API/resources/config" \
  -d '{"limits": {"partner-api": "5/fortnight"}}')
jq -r .detail /tmp/flotilla-bad-policy.json
[[ $code == 400 ]]

echo "== SIGHUP re-reads flotilla.json (the limit goes back to 2/min, use kept)"
kill -HUP "$FLOTILLA_PID"
for _ in $(seq 50); do
  limit=$(curl -sf "${H[@]}" "$API/resources/config" | jq -r '.limits["partner-api"][0]')
  [[ $limit == 2/min ]] && break
  sleep 0.1
done
echo "partner-api limit after SIGHUP: $limit"
[[ $limit == 2/min ]]
echo "== done"
