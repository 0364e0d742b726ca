/**
 * The `/dashboard` page: a small self-contained live view (no CDN, no build step). It reads
 * `/status` and `/tasks/history`, then follows `/ws/events`. The API key comes from
 * `?api_key=` (then kept in this tab's sessionStorage) or is asked for.
 */
export function dashboardHtml(prefix: string): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Flotilla dashboard</title>
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 0; background: #f6f7f9; color: #1d232b; }
  header { background: #1d3557; color: #fff; padding: 10px 18px; display: flex; gap: 16px; align-items: center; }
  header h1 { font-size: 17px; margin: 0; }
  #conn { font-size: 12px; padding: 2px 8px; border-radius: 10px; background: #777; }
  #conn.live { background: #2a9d8f; }
  main { padding: 14px 18px; display: grid; gap: 14px; grid-template-columns: 1fr 1fr; }
  section { background: #fff; border-radius: 6px; padding: 10px 14px; box-shadow: 0 1px 2px #0002; }
  section.wide { grid-column: 1 / 3; }
  h2 { font-size: 14px; margin: 0 0 8px; }
  table { border-collapse: collapse; width: 100%; font-size: 13px; }
  td, th { text-align: left; padding: 3px 6px; border-bottom: 1px solid #eee; }
  .st-succeeded { color: #2a9d8f; } .st-failed, .st-timed_out { color: #c1121f; }
  .st-running, .st-leased { color: #e76f51; } .st-cancelled, .st-skipped { color: #777; }
  #log { font-family: ui-monospace, monospace; font-size: 12px; max-height: 220px; overflow: auto; }
  .kv { display: flex; flex-wrap: wrap; gap: 10px; } .kv div { background: #eef2f6; padding: 4px 8px; border-radius: 4px; }
</style>
</head>
<body>
<header><h1>Flotilla</h1><span id="conn">connecting</span><span id="uptime"></span></header>
<main>
  <section><h2>Tasks</h2><div class="kv" id="metrics"></div></section>
  <section><h2>Workers</h2><table><thead><tr><th>id</th><th>kind</th><th>status</th><th>load</th></tr></thead><tbody id="workers"></tbody></table></section>
  <section class="wide"><h2>Recent tasks</h2><table><thead><tr><th>id</th><th>type</th><th>status</th><th>worker</th><th>updated</th></tr></thead><tbody id="tasks"></tbody></table></section>
  <section class="wide"><h2>Events</h2><div id="log"></div></section>
</main>
<script>
(() => {
  const PREFIX = ${JSON.stringify(prefix)};
  const params = new URLSearchParams(location.search);
  let key = params.get("api_key") || sessionStorage.getItem("flotilla_key") || "";
  if (params.get("api_key")) { sessionStorage.setItem("flotilla_key", key); history.replaceState(null, "", location.pathname); }
  const headers = () => (key ? { "X-API-Key": key } : {});
  const $ = (id) => document.getElementById(id);
  const esc = (s) => String(s ?? "").replace(/[&<>"]/g, (ch) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[ch]);
  const tasks = new Map();

  async function api(path) {
    const res = await fetch(PREFIX + path, { headers: headers() });
    if (res.status === 401) {
      const k = prompt("Flotilla API key");
      if (k) { key = k; sessionStorage.setItem("flotilla_key", k); return api(path); }
    }
    if (!res.ok) throw new Error(path + ": " + res.status);
    return res.json();
  }
  function renderTasks() {
    const rows = [...tasks.values()].sort((a, b) => (b.t || 0) - (a.t || 0)).slice(0, 100);
    $("tasks").innerHTML = rows.map((t) => '<tr data-task-id="' + esc(t.task_id) + '"><td>' + esc(t.task_id) + "</td><td>" + esc(t.type) +
      '</td><td class="st-' + esc(t.status) + '">' + esc(t.status) + "</td><td>" + esc(t.worker_id || "") + "</td><td>" + new Date(t.t).toLocaleTimeString() + "</td></tr>").join("");
  }
  function upsert(view, t) {
    if (!view || !view.task_id) return;
    tasks.set(view.task_id, { ...(tasks.get(view.task_id) || {}), ...view, t: t || Date.now() });
    if (tasks.size > 500) tasks.delete(tasks.keys().next().value);
    renderTasks();
  }
  function renderStatus(s) {
    $("uptime").textContent = "up " + s.uptime_seconds + " s";
    const m = s.metrics || {};
    $("metrics").innerHTML = ["tasks_submitted", "queued_tasks", "active_tasks", "tasks_completed", "tasks_failed", "avg_execution_time_ms"]
      .map((k) => "<div>" + k.replace(/_/g, " ") + ": <b>" + esc(typeof m[k] === "number" ? Math.round(m[k] * 10) / 10 : m[k]) + "</b></div>").join("");
    const ws = (s.workers && s.workers.list) || [];
    $("workers").innerHTML = ws.map((w) => "<tr><td>" + esc(w.id) + "</td><td>" + esc(w.kind) + "</td><td>" + esc(w.status) + "</td><td>" +
      esc(w.current_tasks + "/" + w.max_concurrent_tasks) + "</td></tr>").join("");
  }
  function log(env) {
    const line = document.createElement("div");
    line.textContent = env.ts.slice(11, 23) + " " + env.type + (env.task_id ? " " + env.task_id : "");
    $("log").prepend(line);
    while ($("log").childElementCount > 200) $("log").lastChild.remove();
  }
  async function refresh() {
    try { renderStatus(await api("/status")); } catch (e) { console.warn(e); }
  }
  async function load() {
    await refresh();
    try { const h = await api("/tasks/history?limit=50"); for (const t of h.tasks.reverse()) upsert(t, Date.parse(t.created_at)); } catch (e) { console.warn(e); }
    connect();
    setInterval(refresh, 5000);
  }
  function connect() {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const safe = /^[A-Za-z0-9_\\-.~]+$/.test(key);
    const url = proto + "//" + location.host + PREFIX + "/ws/events" + (key && !safe ? "?api_key=" + encodeURIComponent(key) : "");
    const ws = new WebSocket(url, key && safe ? ["flotilla.v1", "flotilla-key." + key] : ["flotilla.v1"]);
    ws.onopen = () => { $("conn").textContent = "live"; $("conn").className = "live"; };
    ws.onclose = () => { $("conn").textContent = "reconnecting"; $("conn").className = ""; setTimeout(connect, 2000); };
    ws.onmessage = (m) => {
      const env = JSON.parse(m.data);
      if (env.type === "hello") return;
      log(env);
      if (env.type.startsWith("task:") && env.data && env.data.task) upsert(env.data.task, Date.parse(env.ts));
    };
  }
  load();
})();
</script>
</body>
</html>`;
}
