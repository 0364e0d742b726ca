#!/usr/bin/env bash
# Human approval gates on `flotilla serve`, decided from the command line.
# Needs: a running `flotilla serve`, FLOTILLA_URL and FLOTILLA_API_KEY (the `flotilla task`
# commands read both), `flotilla` on PATH.
set -euo pipefail
API="$FLOTILLA_URL/api/v2/orchestrator"
H=(-H "X-API-Key: $FLOTILLA_API_KEY" -H "content-type: application/json")

echo "== a deploy step that must be approved before it runs"
deploy=$(flotilla task submit --type tool_call \
  --payload '{"tool_name": "echo", "tool_input": "deploy v1.4.2 to production"}' \
  --approval before_run | jq -r .task_id)
flotilla task get "$deploy" | jq -c '{status, waiting_for: [.waiting_for[].message]}'

echo "== a report whose result must be approved before it counts (after_run), over HTTP"
report=$(curl -sf "${H[@]}" "$API/tasks/submit" -d '{
    "type": "tool_call",
    "payload": {"tool_name": "math", "tool_input": {"expression": "1200 * 1.19"}},
    "approval": "after_run"
  }' | jq -r .task_id)

echo "== the queue of tasks awaiting a decision"
for _ in $(seq 50); do
  waiting=$(flotilla task list --status awaiting_approval | jq -r '[.tasks[].task_id] | length')
  [[ $waiting == 2 ]] && break
  sleep 0.1
done
flotilla task list --status awaiting_approval | jq -c '[.tasks[] | {task_id, approval: .approval.mode}]'
[[ $waiting == 2 ]]

echo "== approve the deploy with a comment; reject the report"
flotilla task approve "$deploy" --comment "change ticket CHG-1042 signed off" |
  jq -c '{status, approval: {decision: .approval.decision, by: .approval.by, comment: .approval.comment}}'
flotilla task reject "$report" --comment "numbers need a second look" | jq -c '{status, approval: .approval.decision}'

echo "== the deploy ran; the report ended rejected"
flotilla task watch "$deploy" >/dev/null
[[ $(flotilla task get "$deploy" | jq -r .status) == succeeded ]]
[[ $(flotilla task get "$report" | jq -r .status) == rejected ]]
flotilla task get "$deploy" | jq -c '{status, result}'

echo "== approving again is harmless; approving the rejected report is refused with its state (exit 1, the server's 409)"
flotilla task approve "$deploy" | jq -c '{status, approval: .approval.decision}'
if flotilla task approve "$report" 2>/tmp/flotilla-approve-rejected.txt; then
  echo "expected a refusal"; exit 1
fi
cat /tmp/flotilla-approve-rejected.txt
grep -q "rejected" /tmp/flotilla-approve-rejected.txt
echo "== done"
