#!/usr/bin/env bash
# Following a task with Server-Sent Events and curl, and resuming after a disconnect.
# Needs: a running `flotilla serve`, FLOTILLA_URL and FLOTILLA_API_KEY.
set -euo pipefail
API="$FLOTILLA_URL/api/v2/orchestrator"
H=(-H "X-API-Key: $FLOTILLA_API_KEY" -H "content-type: application/json")

echo "== a task that takes two seconds"
id=$(curl -sf "${H[@]}" "$API/tasks/submit" -d '{
    "type": "tool_call",
    "payload": {"tool_name": "sleep", "tool_input": {"ms": 2000}}
  }' | jq -r .task_id)

echo "== watch it until it is running, then hang up (like a dropped connection)"
# (curl ends with "failed writing" when sed quits: that hang-up is the point here.)
{ curl -sN --max-time 20 -H "X-API-Key: $FLOTILLA_API_KEY" "$API/tasks/$id/events" || true; } |
  sed '/^event: task:running$/,$!b; /^id: /q' | tee /tmp/flotilla-sse-first.txt
last=$(grep '^id: ' /tmp/flotilla-sse-first.txt | tail -1 | cut -d' ' -f2)
echo "-- last event id seen: $last"

echo "== reconnect with Last-Event-ID: only what was missed, to the end"
curl -sfN --max-time 20 -H "X-API-Key: $FLOTILLA_API_KEY" -H "Last-Event-ID: $last" \
  "$API/tasks/$id/events" | tee /tmp/flotilla-sse-rest.txt
grep -q '^event: task:succeeded' /tmp/flotilla-sse-rest.txt
if grep -q '^event: task:running' /tmp/flotilla-sse-rest.txt; then
  echo "a resumed stream must not repeat what was seen"; exit 1
fi

echo "== the same as a browser would: EventSource sends Last-Event-ID itself; or ?last_event_id="
curl -sfN --max-time 20 -H "X-API-Key: $FLOTILLA_API_KEY" "$API/tasks/$id/events?last_event_id=$last" |
  grep -c '^event: ' | xargs echo "events after $last:"
echo "== done"
