// jupyter-taskq widgets. When the page's Jupyter server is the queue's server ("api_path" set),
// the widget talks to the REST API itself, with the page's cookie and XSRF token: it stays live
// and its buttons work while the kernel is busy running another cell. Otherwise it renders the
// snapshots the kernel pushes and sends button clicks to the kernel.

const FINAL = new Set(["COMPLETE", "CANCELLED", "TIMEOUT", "EXPIRED", "FAILED"]);
const CANCELLABLE = new Set(["PENDING", "RETRY", "RUNNING"]);
const POLL_MS = 500;

function baseUrl() {
  const el = document.getElementById("jupyter-config-data");
  try {
    return (el && JSON.parse(el.textContent).baseUrl) || "/";
  } catch (e) {
    return "/";
  }
}

function xsrfToken() {
  const match = document.cookie.match("\\b_xsrf=([^;]*)\\b");
  return match ? decodeURIComponent(match[1]) : undefined;
}

async function callApi(model, path, method = "GET", body = undefined) {
  const headers = { "Content-Type": "application/json" };
  const token = xsrfToken();
  if (token) headers["X-XSRFToken"] = token;
  const response = await fetch(baseUrl() + model.get("api_path") + path, {
    method, headers, credentials: "same-origin", body: body === undefined ? undefined : JSON.stringify(body),
  });
  const reply = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(reply.message || `${response.status} ${response.statusText}`);
  return reply;
}

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

function chip(status) {
  return el("span", `jtq-chip jtq-${(status || "unknown").toLowerCase()}`, status || "…");
}

function seconds(task) {
  if (!task.started_at) return null;
  const end = task.ended_at ? Date.parse(task.ended_at) : Date.now();
  return Math.max(0, (end - Date.parse(task.started_at)) / 1000);
}

function formatBytes(n) {
  if (n === null || n === undefined) return "";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function formatSeconds(s) {
  if (s === null) return "";
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  return m < 60 ? `${m} min ${Math.floor(s % 60)} s` : `${Math.floor(m / 60)} h ${m % 60} min`;
}

// Polls while the widget is on the page and its tasks are unfinished.
function poller(node, tick) {
  let timer = null;
  let stopped = false;
  const loop = async () => {
    if (stopped) return;
    let again = true;
    if (node.isConnected) {
      try {
        again = await tick();
      } catch (e) {
        again = true;
      }
    } else if (timer !== null) {
      // not attached (yet, or any more): look again later
    }
    if (again && !stopped) timer = setTimeout(loop, POLL_MS);
  };
  loop();
  return {
    stop() { stopped = true; if (timer !== null) clearTimeout(timer); },
    restart() { if (stopped) { stopped = false; loop(); } },
  };
}

function renderTask({ model, el: root }) {
  root.classList.add("jtq-widget");
  const direct = () => Boolean(model.get("api_path"));
  let task = model.get("snapshot") || {};
  let message = "";

  const head = el("div", "jtq-head");
  const body = el("div", "jtq-body");
  const actions = el("div", "jtq-actions");
  const cancel = el("button", "jtq-button jtq-cancel", "Cancel");
  const retry = el("button", "jtq-button jtq-retry", "Retry");
  actions.append(cancel, retry);
  root.append(head, body, actions);

  // The log tail: fetched from the REST API while the section is open, following with offsets.
  const logView = el("details", "jtq-log");
  const logText = el("pre", "jtq-log-text");
  logView.append(el("summary", "", "Log"), logText);
  let logOffset = 0;
  let logTimer = null;
  async function followLog() {
    if (!logView.open) { logTimer = null; return; }
    try {
      const chunk = await callApi(model, `tasks/${model.get("task_id")}/logs?offset=${logOffset}`);
      if (chunk.reset) logText.textContent = "";
      logText.textContent = (logText.textContent + chunk.data).slice(-20000);
      logOffset = chunk.next_offset;
      logText.scrollTop = logText.scrollHeight;
      if (FINAL.has(chunk.status) && logOffset >= chunk.size) { logTimer = null; return; }
    } catch (e) { /* try again */ }
    logTimer = setTimeout(followLog, POLL_MS);
  }
  logView.addEventListener("toggle", () => { if (logView.open && logTimer === null) followLog(); });

  function draw() {
    head.replaceChildren(el("span", "jtq-name", task.name || task.id || model.get("task_id")), chip(task.status));
    const facts = [];
    if (task.attempt) facts.push(`attempt ${task.attempt} of ${task.max_retries + 1}`);
    if (task.worker) facts.push(task.gpu ? `on ${task.worker} (GPU)` : `on ${task.worker}`);
    const elapsed = seconds(task);
    if (elapsed !== null) facts.push(formatSeconds(elapsed));
    body.replaceChildren(el("div", "jtq-facts", facts.join(" · ")));
    if (task.error && task.status !== "COMPLETE") {
      const details = el("details", "jtq-error");
      details.append(el("summary", "", `${task.error.type}: ${task.error.message}`));
      if (task.error.traceback) details.append(el("pre", "jtq-traceback", task.error.traceback));
      body.append(details);
    }
    if (task.progress) {
      const p = task.progress;
      const row = el("div", "jtq-progress-row");
      const bar = el("progress", "jtq-progress");
      if (p.fraction !== null && p.fraction !== undefined) { bar.max = 1; bar.value = p.fraction; }
      const label = p.total ? `${p.done} / ${p.total}` : `${p.done}`;
      row.append(bar, el("span", "jtq-facts", p.message ? `${label} · ${p.message}` : label));
      body.append(row);
    }
    if (task.outputs && task.outputs.length) {
      const links = el("div", "jtq-outputs");
      for (const output of task.outputs) {
        if (direct()) {
          const a = el("a", "jtq-download", `⬇ ${output.name}`);
          a.href = output.url;
          a.setAttribute("download", output.name);
          links.append(a, el("span", "jtq-facts", ` ${formatBytes(output.size)} `));
        } else {
          links.append(el("span", "jtq-facts", `${output.name} (${formatBytes(output.size)}) `));
        }
      }
      body.append(links);
    }
    if (direct()) body.append(logView);
    if (message) body.append(el("div", "jtq-message", message));
    cancel.style.display = CANCELLABLE.has(task.status) ? "" : "none";
    retry.style.display = FINAL.has(task.status) ? "" : "none";
  }

  async function refresh() {
    task = await callApi(model, `tasks/${model.get("task_id")}`);
    draw();
    return !FINAL.has(task.status);
  }

  let poll = null;
  if (direct()) poll = poller(root, refresh);
  const ticker = setInterval(() => { if (task.status === "RUNNING") draw(); }, 1000);

  // A button acts through the REST API when the page reaches the queue, else asks the kernel;
  // either way it says what happened and cannot be clicked twice at once.
  function onClick(button, label, direct_action, kernel_event) {
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        if (direct()) {
          message = await direct_action();
        } else {
          model.send({ event: kernel_event });
          message = `${label} sent to the kernel`;
        }
      } catch (e) {
        message = `${label} failed: ${e.message}`;
      } finally {
        draw();
        button.disabled = false;
      }
    });
  }

  onClick(cancel, "cancel", async () => {
    const reply = await callApi(model, "tasks/cancel", "POST", { task_ids: [model.get("task_id")] });
    await refresh();
    return reply.cancelled.length ? "cancel requested" : `not cancelled: ${reply.not_cancelled[0].reason}`;
  }, "cancel");

  onClick(retry, "retry", async () => {
    const fresh = await callApi(model, `tasks/${model.get("task_id")}/retry`, "POST");
    model.set("task_id", fresh.id);
    model.save_changes();
    logOffset = 0;
    logText.textContent = "";
    task = fresh;
    if (poll) poll.stop();
    poll = poller(root, refresh);
    return `retried as ${fresh.id}`;
  }, "retry");

  model.on("change:snapshot", () => { task = model.get("snapshot") || task; draw(); });
  draw();
  return () => { if (poll) poll.stop(); clearInterval(ticker); };
}

function renderGroup({ model, el: root }) {
  // The synced state is the group's counts, total and first rows (a big group carries no ids: it is read
  // as groups/<group_id> from the REST API); the rows drawn are at most ROWS.
  root.classList.add("jtq-widget", "jtq-group");
  const ROWS = 20;
  let tasks = model.get("snapshot") || [];
  let counts = model.get("counts") || {};
  let total = model.get("total") || tasks.length;
  let message = "";
  const head = el("div", "jtq-head");
  const bar = el("progress", "jtq-progress");
  const list = el("div", "jtq-list");
  const cancelAll = el("button", "jtq-button jtq-cancel", "Cancel all");
  root.append(head, bar, el("div", "jtq-actions"), list);
  root.querySelector(".jtq-actions").append(cancelAll);

  function draw() {
    if (!Object.keys(counts).length) {
      for (const t of tasks) counts[t.status] = (counts[t.status] || 0) + 1;
    }
    const done = Object.entries(counts).filter(([s]) => FINAL.has(s) || s === "MISSING").reduce((n, [, c]) => n + c, 0);
    head.replaceChildren(el("span", "jtq-name", `${total} tasks`),
      ...Object.entries(counts).map(([status, n]) => { const c = chip(status); c.textContent = `${n} ${status}`; return c; }));
    bar.max = Math.max(1, total);
    bar.value = done;
    cancelAll.style.display = Object.keys(counts).some((s) => CANCELLABLE.has(s)) ? "" : "none";
    const rows = tasks.slice(0, ROWS).map((t) => {
      const row = el("div", "jtq-row");
      row.append(chip(t.status), el("span", "jtq-row-name", t.name || t.id), el("span", "jtq-facts", t.worker || ""));
      return row;
    });
    if (total > rows.length) rows.push(el("div", "jtq-facts", `showing ${rows.length} of ${total} tasks`));
    if (message) rows.unshift(el("div", "jtq-message", message));
    list.replaceChildren(...rows);
  }

  async function ids() {
    if (!model.get("group_id")) return model.get("task_ids");
    return (await callApi(model, `groups/${model.get("group_id")}?limit=0&ids=1`)).task_ids;
  }

  async function refresh() {
    if (model.get("group_id")) {
      const reply = await callApi(model, `groups/${model.get("group_id")}?limit=${ROWS}`);
      tasks = reply.tasks; counts = reply.counts; total = reply.count;
      draw();
      return !reply.done;
    }
    const reply = await callApi(model, "tasks/wait", "POST", { task_ids: model.get("task_ids"), timeout: 0 });
    tasks = reply.tasks; total = tasks.length; counts = {};
    draw();
    return !reply.done;
  }

  const poll = model.get("api_path") ? poller(root, refresh) : null;
  cancelAll.addEventListener("click", async () => {
    cancelAll.disabled = true;
    try {
      if (model.get("api_path")) {
        const reply = await callApi(model, "tasks/cancel", "POST", { task_ids: await ids() });
        message = `cancelled ${reply.cancelled.length}`;
        await refresh();
        if (poll) poll.restart();
      } else {
        model.send({ event: "cancel" });
        message = "cancel sent to the kernel";
        draw();
      }
    } finally {
      cancelAll.disabled = false;
    }
  });
  model.on("change:snapshot", () => { tasks = model.get("snapshot") || tasks; draw(); });
  model.on("change:counts", () => { counts = model.get("counts") || {}; draw(); });
  model.on("change:total", () => { total = model.get("total") || total; draw(); });
  draw();
  return () => { if (poll) poll.stop(); };
}

export default {
  render(context) {
    return context.model.get("kind") === "group" ? renderGroup(context) : renderTask(context);
  },
};
