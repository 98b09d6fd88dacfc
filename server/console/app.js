// The Eddy console: a SQL editor, a catalog browser and SQL-driven dashboards, over the same
// REST API ksqlDB clients use (/ksql, /query-stream, /close-query) plus /api/dashboards and
// /api/topics.
"use strict";

const $ = (id) => document.getElementById(id);

// ---- talking to the server -------------------------------------------------------------

class ServerError extends Error {
  constructor(body, statement) {
    super((body && body.message) || "The server refused the request");
    this.body = body;
    this.statement = statement;
  }
}

async function ksql(statements, properties) {
  const res = await fetch("/ksql", {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "application/vnd.ksql.v1+json" },
    body: JSON.stringify({ ksql: statements, streamsProperties: properties || {} }),
  });
  const body = await res.json().catch(() => ({ message: res.statusText }));
  if (!res.ok) throw new ServerError(body, statements);
  return body;
}

async function api(method, path, body) {
  const res = await fetch(path, {
    method,
    headers: body === undefined ? {} : { "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (res.status === 204) return null;
  const parsed = await res.json().catch(() => ({ message: res.statusText }));
  if (!res.ok) throw new ServerError(parsed);
  return parsed;
}

// Runs a query over /query-stream: onMeta gets the columns, onRow each row as it arrives.
// Resolves when the query ends; abort the signal (after /close-query) to stop a push query.
async function streamQuery(sql, properties, handlers, signal) {
  const res = await fetch("/query-stream", {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "application/vnd.ksqlapi.delimited.v1" },
    body: JSON.stringify({ sql, properties: properties || {} }),
    signal,
  });
  if (!res.ok) {
    const body = await res.json().catch(() => ({ message: res.statusText }));
    throw new ServerError(body, sql);
  }
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let meta = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let nl;
    while ((nl = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, nl).trim();
      buffer = buffer.slice(nl + 1);
      if (!line) continue;
      const item = JSON.parse(line);
      if (!meta) { meta = item; handlers.onMeta(item); }
      else if (Array.isArray(item)) handlers.onRow(item);
      else throw new ServerError(item, sql);
    }
  }
}

async function closeQuery(queryId) {
  if (!queryId) return;
  await fetch("/close-query", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ queryId }),
  }).catch(() => {});
}

// ---- SQL text ----------------------------------------------------------------------------

// Splits a script into statements at semicolons outside quotes and comments.
function splitStatements(text) {
  const out = [];
  let start = 0, i = 0, quote = null;
  while (i < text.length) {
    const c = text[i];
    if (quote) {
      if (c === quote) quote = null;
    } else if (c === "'" || c === '"' || c === "`") {
      quote = c;
    } else if (c === "-" && text[i + 1] === "-") {
      const end = text.indexOf("\n", i);
      i = end < 0 ? text.length : end;
      continue;
    } else if (c === "/" && text[i + 1] === "*") {
      const end = text.indexOf("*/", i + 2);
      i = end < 0 ? text.length : end + 2;
      continue;
    } else if (c === ";") {
      out.push({ text: text.slice(start, i + 1).trim(), offset: start });
      start = i + 1;
    }
    i++;
  }
  if (text.slice(start).replace(/--[^\n]*|\/\*[\s\S]*?\*\//g, "").trim()) {
    out.push({ text: text.slice(start).trim(), offset: start });
  }
  return out.filter((s) => s.text.replace(/--[^\n]*|\/\*[\s\S]*?\*\//g, "").trim() !== ";" && s.text);
}

function firstWord(sql) {
  const m = sql.replace(/--[^\n]*|\/\*[\s\S]*?\*\//g, " ").trim().match(/^[A-Za-z]+/);
  return m ? m[0].toUpperCase() : "";
}

function isPush(sql) {
  return /\bEMIT\s+(CHANGES|FINAL)\b/i.test(sql);
}

// ---- small DOM helpers ---------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "onclick") node.addEventListener("click", v);
    else if (v !== undefined && v !== null && v !== false) node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    node.appendChild(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
  }
  return node;
}

function cellText(v) {
  if (v === null || v === undefined) return "null";
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

function table(columns, rows) {
  return h("table", {},
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, rows.map((r) => h("tr", {}, r.map((v) => h("td", { class: typeof v === "number" ? "num" : null }, cellText(v)))))));
}

function showError(box, error, statement) {
  box.hidden = false;
  box.textContent = "";
  const message = error instanceof ServerError ? error.message : String(error.message || error);
  const where = statement || (error && error.statement);
  if (where) box.appendChild(h("div", {}, h("strong", {}, "In: "), where.length > 300 ? where.slice(0, 300) + "…" : where));
  box.appendChild(h("div", {}, message));
}

function hideError(box) {
  box.hidden = true;
  box.textContent = "";
}

// ---- tabs ------------------------------------------------------------------------------------

const tabs = ["query", "catalog", "dashboards"];
let currentTab = null;

function route() {
  const [tab, arg] = (location.hash.replace(/^#/, "") || "query").split("/");
  const name = tabs.includes(tab) ? tab : "query";
  for (const t of tabs) {
    $("tab-" + t).hidden = t !== name;
    const link = document.querySelector(`nav a[data-tab="${t}"]`);
    if (t === name) link.setAttribute("aria-current", "page"); else link.removeAttribute("aria-current");
  }
  if (currentTab !== name) {
    if (currentTab === "catalog") Catalog.stop();
    currentTab = name;
    if (name === "catalog") Catalog.start();
  }
  if (name === "dashboards") Dashboards.show(arg ? decodeURIComponent(arg) : null);
  else Dashboards.hide();
}

// ---- the SQL editor --------------------------------------------------------------------------

const Editor = (() => {
  let running = null; // { queryId, controller }

  function properties() {
    return { "auto.offset.reset": $("offset-reset").value };
  }

  function resultBox(statement) {
    const body = h("div", { class: "body" });
    const box = h("section", { class: "result" }, h("header", { title: statement }, statement), body);
    $("results").appendChild(box);
    return body;
  }

  function renderEntity(entity) {
    switch (entity["@type"]) {
      case "currentStatus": return h("p", {}, entity.commandStatus.message);
      case "warning_entity": return h("p", {}, entity.message);
      case "streams": case "tables": {
        const list = entity.streams || entity.tables || [];
        return table(["Name", "Topic", "Key format", "Value format", "Windowed"],
          list.map((s) => [s.name, s.topic, s.keyFormat, s.valueFormat, s.isWindowed]));
      }
      case "kafka_topics":
        return table(["Topic", "Partitions"], entity.topics.map((t) => [t.name, (t.replicaInfo || []).length]));
      case "queries":
        return table(["Query ID", "Type", "State", "Sinks", "SQL"],
          entity.queries.map((q) => [q.id, q.queryType, q.state, (q.sinks || []).join(", "), q.queryString]));
      case "query_descriptions":
        return table(["Query ID", "State", "Lag", "Statistics", "SQL"],
          entity.queryDescriptions.map((q) => [q.id, q.state, q.consumerLag, q.statistics, q.statementText]));
      case "sourceDescription": return Catalog.sourceDetail(entity.sourceDescription);
      case "connector_list":
        return table(["Name", "Type", "Class", "State"], entity.connectors.map((c) => [c.name, c.type, c.className, c.state]));
      case "connector_description": return Catalog.connectorDetail(entity);
      case "properties":
        return table(["Property", "Value"], entity.properties.map((p) => [p.name, p.value]));
      case "function_names":
        return table(["Function", "Type"], entity.functions.map((f) => [f.name, f.type]));
      case "variables":
        return table(["Variable", "Value"], entity.variables.map((v) => [v.name, v.value]));
      case "queryDescription": {
        const q = entity.queryDescription;
        return h("div", {}, h("p", {}, `${q.id || "(not running)"} — ${q.state}`), h("pre", { class: "sql" }, q.statementText),
          h("pre", { class: "sql" }, q.executionPlan || ""));
      }
      default: return h("pre", { class: "sql" }, JSON.stringify(entity, null, 2));
    }
  }

  async function runQuery(statement) {
    const body = resultBox(statement.text);
    const status = h("p", { class: "muted" }, "Running…");
    body.appendChild(status);
    const rows = [];
    let columns = [];
    let tbody = null;
    const controller = new AbortController();
    const push = isPush(statement.text);
    running = { queryId: null, controller };
    $("stop").disabled = !push;
    const started = performance.now();
    try {
      await streamQuery(statement.text, properties(), {
        onMeta(meta) {
          columns = meta.columnNames;
          running.queryId = meta.queryId || null;
          const t = table(columns, []);
          tbody = t.querySelector("tbody");
          body.appendChild(t);
          status.textContent = push ? "Streaming rows as they arrive; Stop closes the query." : "";
        },
        onRow(row) {
          rows.push(row);
          const tr = h("tr", {}, row.map((v) => h("td", { class: typeof v === "number" ? "num" : null }, cellText(v))));
          if (push) tbody.prepend(tr); else tbody.appendChild(tr);
          // A live table keeps the newest rows only, so a long-running query stays light.
          if (push && tbody.rows.length > 1000) tbody.deleteRow(-1);
          if (push) status.textContent = `${rows.length} rows so far; Stop closes the query.`;
        },
      }, controller.signal);
      const ms = Math.round(performance.now() - started);
      status.textContent = `${rows.length} row${rows.length === 1 ? "" : "s"} in ${ms} ms${push ? " (query ended)" : ""}.`;
    } catch (e) {
      if (e.name === "AbortError") status.textContent = `Stopped after ${rows.length} rows.`;
      // The error shows under the editor; an empty box for the statement would say nothing.
      else if (columns.length === 0) { body.parentElement.remove(); throw e; }
      else { status.remove(); throw e; }
    } finally {
      running = null;
      $("stop").disabled = true;
    }
  }

  async function run() {
    if (running) return;
    const text = $("sql").value;
    const statements = splitStatements(text);
    hideError($("query-error"));
    if (statements.length === 0) return;
    // Each run shows its own results, in the order its statements ran.
    $("results").textContent = "";
    $("run").disabled = true;
    $("query-status").textContent = "Running…";
    let current = null;
    try {
      // Statements other than SELECT go to /ksql in runs, so session properties (SET) apply.
      let batch = [];
      const flush = async () => {
        if (batch.length === 0) return;
        current = batch.map((s) => s.text).join("\n");
        const entities = await ksql(current, properties());
        const body = resultBox(current);
        for (const e of entities) body.appendChild(renderEntity(e));
        batch = [];
      };
      for (const s of statements) {
        if (firstWord(s.text) === "SELECT") {
          await flush();
          current = s.text;
          await runQuery(s);
        } else {
          batch.push(s);
        }
      }
      await flush();
      $("query-status").textContent = "Done.";
      Catalog.invalidate();
    } catch (e) {
      $("query-status").textContent = "Failed.";
      showError($("query-error"), e, current);
    } finally {
      $("run").disabled = false;
    }
  }

  async function stop() {
    if (!running) return;
    const { queryId, controller } = running;
    await closeQuery(queryId);
    controller.abort();
  }

  function init() {
    $("run").addEventListener("click", run);
    $("stop").addEventListener("click", stop);
    $("sql").addEventListener("keydown", (e) => {
      if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); run(); }
    });
  }

  return { init, renderEntity };
})();

// ---- the catalog browser ---------------------------------------------------------------------

const Catalog = (() => {
  let timer = null;
  let selected = null; // { kind, name }
  let data = { streams: [], tables: [], topics: [], queries: [], connectors: [], nodes: {}, replication: { replicated: false } };

  async function load() {
    const [entities, topics, cluster, replication] = await Promise.all([
      ksql("SHOW STREAMS; SHOW TABLES; SHOW QUERIES EXTENDED; SHOW CONNECTORS;"),
      api("GET", "/api/topics"),
      api("GET", "/clusterStatus"),
      api("GET", "/api/replication"),
    ]);
    data = {
      streams: entities[0].streams || [],
      tables: entities[1].tables || [],
      queries: entities[2].queryDescriptions || [],
      connectors: entities[3].connectors || [],
      topics,
      nodes: (cluster && cluster.clusterStatus) || {},
      replication: replication || { replicated: false },
    };
  }

  // A replica's badge: LEADER, IN_SYNC, or OUT_OF_SYNC (it left the ISR).
  const replicaState = (r) => (r.leader ? "LEADER" : r.inSync ? "IN_SYNC" : "OUT_OF_SYNC");

  // A node's badge: its role while it is heard of, else UNRESPONSIVE.
  const nodeState = (n) => (n.hostAlive ? n.role || "ACTIVE" : "UNRESPONSIVE");

  // "RUNNING (1/1 tasks RUNNING)" is listed as RUNNING.
  const stateWord = (state) => String(state || "").split(" ")[0];

  function item(kind, name, extra) {
    const current = selected && selected.kind === kind && selected.name === name;
    return h("button", { type: "button", "data-kind": kind, "data-name": name, "aria-current": current ? "true" : "false", onclick: () => select(kind, name) },
      h("span", {}, name), extra || null);
  }

  function renderList() {
    const list = $("catalog-list");
    list.textContent = "";
    const section = (title, items) => {
      list.appendChild(h("h3", {}, `${title} (${items.length})`));
      items.forEach((i) => list.appendChild(i));
    };
    section("Streams", data.streams.map((s) => item("stream", s.name)));
    section("Tables", data.tables.map((t) => item("table", t.name)));
    section("Topics", data.topics.map((t) => item("topic", t.name,
      h("span", { class: "muted" }, String(t.partitions.reduce((n, p) => n + p.endOffset, 0))))));
    section("Queries", data.queries.map((q) => item("query", q.id, h("span", { class: "badge " + q.state }, q.state))));
    section("Connectors", data.connectors.map((c) => {
      const state = stateWord(c.state);
      return item("connector", c.name, h("span", { class: "badge " + state }, state));
    }));
    section("Nodes", Object.entries(data.nodes).map(([host, n]) => {
      const state = nodeState(n);
      return item("node", host, h("span", { class: "badge " + state }, state));
    }));
    if (data.replication.replicated) {
      section("Replicas", data.replication.nodes.map((r) => {
        const state = replicaState(r);
        return item("replica", String(r.id), h("span", { class: "badge " + state }, state));
      }));
    }
  }

  // The replicated log as the leader sees it: every node, and the counts of its changes.
  function replicaDetail(id) {
    const rep = data.replication;
    const r = rep.nodes.find((n) => String(n.id) === id);
    if (!r) return h("p", {}, "This node is no longer a replica.");
    const lag = (n) => (n.leader ? "" : n.lagEntries === null ? "nothing matched yet" : String(n.lagEntries));
    return h("div", {},
      dl([["State", h("span", { class: "badge " + replicaState(r) }, replicaState(r))], ["This node", r.local ? "yes" : "no"],
        ["Term (leader epoch)", String(rep.term)], ["Under-replicated", rep.underReplicated ? "yes: every partition" : "no"],
        ["ISR shrinks", String(rep.isrShrinks)], ["ISR expands", String(rep.isrExpands)], ["Leader changes", String(rep.leaderChanges)]]),
      h("h4", {}, "Replicas"),
      table(["Node", "State", "Entries behind"], rep.nodes.map((n) => [String(n.id), replicaState(n), lag(n)])));
  }

  // Each partition a node runs a query over (or keeps its state for), with the lag there.
  function partitionRows(host, n, onlyQuery) {
    const lags = (n.hostStoreLags && n.hostStoreLags.stateStoreLags) || {};
    return Object.entries(n.activeStandbyPerQuery || {})
      .filter(([id]) => !onlyQuery || id === onlyQuery)
      .flatMap(([id, q]) => [["active", q.activePartitions || []], ["standby", q.standByPartitions || []]]
        .flatMap(([how, partitions]) => partitions.map((p) => {
          const store = Object.keys(lags).find((k) => k.endsWith(`_query_${id}#${p.topic}`));
          const lag = store ? ((lags[store].lagByPartition || {})[String(p.partition)] || {}).offsetLag : undefined;
          return [host, id, how, p.topic, p.partition, lag === undefined ? "" : String(lag)];
        })));
  }

  function nodeDetail(host, n) {
    return h("div", {},
      dl([["State", h("span", { class: "badge " + nodeState(n) }, nodeState(n))], ["This node", n.local ? "yes" : "no"],
        ["Last status", n.lastStatusUpdateMs ? new Date(n.lastStatusUpdateMs).toLocaleString() : undefined]]),
      h("h4", {}, "Partitions"),
      table(["Node", "Query", "As", "Topic", "Partition", "Lag"], partitionRows(host, n)));
  }

  function dl(pairs) {
    return h("dl", {}, pairs.filter((p) => p[1] !== undefined && p[1] !== null && p[1] !== "").flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
  }

  function sourceDetail(d) {
    const fields = (d.fields || []).map((f) => [f.name, schemaText(f.schema) + (f.type === "KEY" ? (d.type === "TABLE" ? " (primary key)" : " (key)") : "")]);
    const queryList = (qs) => qs.length ? h("ul", {}, qs.map((q) => h("li", {}, h("code", {}, q.id), ` (${q.state})`))) : h("p", { class: "muted" }, "None");
    return h("div", {},
      dl([["Type", d.type], ["Topic", `${d.topic} (partitions: ${d.partitions})`], ["Key format", d.keyFormat], ["Value format", d.valueFormat],
        ["Window", d.windowType], ["Timestamp", d.timestamp], ["Statistics", d.statistics], ["Errors", d.errorStats]]),
      h("h4", {}, "Columns"), table(["Name", "Type"], fields),
      h("h4", {}, "Queries reading it"), queryList(d.readQueries || []),
      h("h4", {}, "Queries writing it"), queryList(d.writeQueries || []),
      d.statement ? h("pre", { class: "sql" }, d.statement) : null);
  }

  function schemaText(s) {
    if (!s) return "";
    if (s.type === "ARRAY") return `ARRAY<${schemaText(s.memberSchema)}>`;
    if (s.type === "MAP") return `MAP<STRING, ${schemaText(s.memberSchema)}>`;
    if (s.type === "STRUCT") return `STRUCT<${(s.fields || []).map((f) => `${f.name} ${schemaText(f.schema)}`).join(", ")}>`;
    return s.type;
  }

  function topicDetail(t) {
    const config = Object.entries(t.config || {}).filter(([k]) => /retention|cleanup|segment|max\.message/.test(k));
    return h("div", {},
      dl([["Partitions", t.partitions.length], ["Created", new Date(t.createdMs).toLocaleString()]]),
      h("h4", {}, "Partitions"),
      table(["Partition", "Log start", "End offset", "Records", "Bytes", "Segments"],
        t.partitions.map((p) => [p.partition, p.logStartOffset, p.endOffset, p.endOffset - p.logStartOffset, p.sizeBytes, p.segments])),
      h("h4", {}, "Config"), table(["Name", "Value"], config));
  }

  const action = (label, sql) => h("button", { type: "button", onclick: async () => {
    try { await ksql(sql); await refresh(); } catch (e) { showError($("catalog-error"), e, sql); }
  } }, label);

  function connectorDetail(d) {
    const status = d.status || {};
    const state = (status.connector || {}).state;
    const name = "`" + status.name + "`";
    const trace = (status.tasks || []).map((t) => t.trace).filter(Boolean).join("\n");
    return h("div", {},
      h("div", { class: "toolbar" },
        state === "PAUSED" ? action("Resume", `RESUME CONNECTOR ${name};`) : action("Pause", `PAUSE CONNECTOR ${name};`),
        action("Drop", `DROP CONNECTOR ${name};`)),
      h("div", { id: "catalog-error", class: "error", role: "alert", hidden: true }),
      dl([["State", h("span", { class: "badge " + state }, state)], ["Type", status.type], ["Class", d.connectorClass],
        ["Lag (records)", d.lag === null || d.lag === undefined ? undefined : String(d.lag)],
        ["Lag (WAL bytes)", d.walLagBytes === null || d.walLagBytes === undefined ? undefined : String(d.walLagBytes)],
        ["Topics", (d.topics || []).join(", ")]]),
      trace ? h("div", {}, h("h4", {}, "Error"), h("pre", { class: "sql" }, trace)) : null);
  }

  function queryDetail(q) {
    const offsets = (q.queryOffsetSummaries || []).flatMap((g) => g.topicSummaries.flatMap((t) => t.offsets.map((o) =>
      [t.kafkaTopic, o.partition, o.logEndOffset, o.consumerOffset, o.logEndOffset - o.consumerOffset])));
    return h("div", {},
      h("div", { class: "toolbar" },
        q.state === "PAUSED" ? action("Resume", `RESUME ${q.id};`) : action("Pause", `PAUSE ${q.id};`),
        action("Terminate", `TERMINATE ${q.id};`)),
      h("div", { id: "catalog-error", class: "error", role: "alert", hidden: true }),
      dl([["State", h("span", { class: "badge " + q.state }, q.state)], ["Type", q.queryType], ["Sources", (q.sources || []).join(", ")],
        ["Sinks", (q.sinks || []).join(", ")], ["Consumer lag", String(q.consumerLag)], ["Statistics", q.statistics], ["Errors", q.errorStats]]),
      h("pre", { class: "sql" }, q.statementText),
      h("h4", {}, "Offsets"),
      table(["Topic", "Partition", "Log end", "Committed", "Lag"], offsets),
      h("h4", {}, "Nodes"),
      table(["Node", "Query", "As", "Topic", "Partition", "Lag"],
        Object.entries(data.nodes).flatMap(([host, n]) => partitionRows(host, n, q.id))));
  }

  async function renderDetail() {
    const box = $("catalog-detail");
    if (!selected) return;
    const { kind, name } = selected;
    let content;
    try {
      if (kind === "stream" || kind === "table") {
        const [entity] = await ksql(`DESCRIBE \`${name}\` EXTENDED;`);
        content = sourceDetail(entity.sourceDescription);
      } else if (kind === "topic") {
        const t = data.topics.find((t) => t.name === name);
        content = t ? topicDetail(t) : h("p", {}, "This topic is gone.");
      } else if (kind === "node") {
        const n = data.nodes[name];
        content = n ? nodeDetail(name, n) : h("p", {}, "This node is gone.");
      } else if (kind === "replica") {
        content = replicaDetail(name);
      } else if (kind === "connector") {
        const c = data.connectors.find((c) => c.name === name);
        content = c ? connectorDetail((await ksql(`DESCRIBE CONNECTOR \`${name}\`;`))[0]) : h("p", {}, "This connector is gone.");
      } else {
        const q = data.queries.find((q) => q.id === name);
        content = q ? queryDetail(q) : h("p", {}, "This query is no longer running.");
      }
    } catch (e) {
      content = h("div", { class: "error", role: "alert" }, e.message);
    }
    box.textContent = "";
    box.appendChild(h("h2", {}, `${kind[0].toUpperCase() + kind.slice(1)} ${name}`));
    box.appendChild(content);
  }

  async function refresh() {
    try {
      await load();
      renderList();
      await renderDetail();
    } catch (e) {
      $("catalog-detail").textContent = "";
      $("catalog-detail").appendChild(h("div", { class: "error", role: "alert" }, "Cannot load the catalog: " + e.message));
    }
  }

  function select(kind, name) {
    selected = { kind, name };
    renderList();
    renderDetail();
    const button = [...$("catalog-list").querySelectorAll("button")].find((b) => b.getAttribute("aria-current") === "true");
    if (button) button.focus();
  }

  function start() {
    refresh();
    timer = setInterval(refresh, 5000);
  }

  function stop() {
    clearInterval(timer);
    timer = null;
  }

  function invalidate() {
    if (timer) refresh();
  }

  return { start, stop, invalidate, sourceDetail, connectorDetail };
})();

// ---- dashboards ------------------------------------------------------------------------------

const NUMERIC = /^(INTEGER|INT|BIGINT|DOUBLE|DECIMAL)/i;

// Which columns a panel draws: x (time), y (value) and series, by name or by ksqlDB's usual
// layout: WINDOWSTART, else ROWTIME, for x; the first number for y; the first text for series.
function pickColumns(panel, names, types) {
  const find = (name) => (name ? names.findIndex((n) => n.toUpperCase() === name.toUpperCase()) : -1);
  let x = find(panel.x);
  if (x < 0 && !panel.x) x = find("WINDOWSTART");
  if (x < 0 && !panel.x) x = find("ROWTIME");
  let y = find(panel.y);
  if (y < 0) y = names.findIndex((n, i) => i !== x && NUMERIC.test(types[i] || "") && !/^(WINDOWSTART|WINDOWEND|ROWTIME|ROWOFFSET|ROWPARTITION)$/i.test(n));
  let series = find(panel.series);
  if (series < 0 && !panel.series) series = names.findIndex((n, i) => i !== x && i !== y && /^(STRING|VARCHAR)/i.test(types[i] || ""));
  return { x, y, series };
}

function toTime(v) {
  if (typeof v === "number") return v;
  const t = Date.parse(v);
  return Number.isNaN(t) ? null : t;
}

// One panel: runs its query and redraws as rows arrive (push) or on an interval (pull).
class PanelView {
  constructor(panel, index, owner) {
    this.panel = panel;
    this.index = index;
    this.owner = owner;
    this.points = new Map(); // series -> Map(x -> y)
    this.rows = [];
    this.names = [];
    this.types = [];
    this.controller = null;
    this.queryId = null;
    this.timer = null;
    this.stopped = false;
    this.push = isPush(panel.sql);
    this.dot = h("span", { class: "live-dot", title: this.push ? "live" : "refreshes" });
    this.chart = h("div", { class: "chart" });
    this.error = h("div", { class: "error", role: "alert", hidden: true });
    this.element = h("article", { class: "panel", "data-panel": index, "aria-label": panel.title },
      h("header", {}, this.dot, h("h3", {}, panel.title),
        h("span", { class: "muted" }, this.push ? "live" : `every ${panel.refreshSecs || 5}s`),
        h("button", { type: "button", class: "small", onclick: () => owner.editPanel(index) }, "Edit"),
        h("button", { type: "button", class: "small", onclick: () => owner.removePanel(index) }, "Remove")),
      this.error, this.chart);
    this.draw();
  }

  start() {
    if (this.push) this.stream();
    else { this.pull(); this.timer = setInterval(() => this.pull(), 1000 * (this.panel.refreshSecs || 5)); }
  }

  stop() {
    this.stopped = true;
    clearInterval(this.timer);
    if (this.controller) { closeQuery(this.queryId); this.controller.abort(); }
  }

  onMeta(meta) {
    this.names = meta.columnNames;
    this.types = meta.columnTypes;
    this.queryId = meta.queryId || null;
    this.columns = pickColumns(this.panel, this.names, this.types);
  }

  add(row) {
    this.rows.push(row);
    if (this.rows.length > 500) this.rows.shift();
    const { x, y, series } = this.columns;
    if (y < 0) return;
    const name = series >= 0 ? cellText(row[series]) : this.panel.title;
    const xv = x >= 0 ? toTime(row[x]) : Date.now();
    const yv = Number(row[y]);
    if (xv === null || Number.isNaN(yv)) return;
    if (!this.points.has(name)) this.points.set(name, new Map());
    const line = this.points.get(name);
    // An update to the same window replaces its point, as a table's changelog does.
    line.set(xv, yv);
    if (line.size > 200) line.delete(Math.min(...line.keys()));
  }

  async stream() {
    this.controller = new AbortController();
    this.dot.classList.add("live");
    let pending = false;
    try {
      await streamQuery(this.panel.sql, { "auto.offset.reset": "earliest" }, {
        onMeta: (meta) => { this.onMeta(meta); this.draw(); },
        onRow: (row) => {
          this.add(row);
          // Rows come in bursts; draw once per frame.
          if (!pending) { pending = true; requestAnimationFrame(() => { pending = false; this.draw(); }); }
        },
      }, this.controller.signal);
    } catch (e) {
      if (e.name !== "AbortError") showError(this.error, e, this.panel.sql);
    } finally {
      this.dot.classList.remove("live");
    }
  }

  async pull() {
    if (this.stopped) return;
    const fresh = new PanelView.Collector();
    try {
      await streamQuery(this.panel.sql, {}, fresh, undefined);
      hideError(this.error);
      this.points = new Map();
      this.rows = [];
      this.onMeta(fresh.meta);
      for (const row of fresh.rows) this.add(row);
      this.draw();
    } catch (e) {
      showError(this.error, e, this.panel.sql);
    }
  }

  draw() {
    const chart = this.panel.chart;
    this.chart.textContent = "";
    if (!this.columns) { this.chart.appendChild(h("p", { class: "muted" }, "Waiting for the query…")); return; }
    const { x, y } = this.columns;
    if (chart === "table") {
      const rows = this.push ? this.rows.slice(-100).reverse() : this.rows;
      this.chart.appendChild(table(this.names, rows));
      return;
    }
    if (y < 0) { this.chart.appendChild(h("p", { class: "error" }, "No numeric column to draw; name one as the value column.")); return; }
    const series = [...this.points.entries()].map(([name, line]) => ({ name, points: [...line.entries()] }));
    if (chart === "number") {
      const last = this.rows[this.rows.length - 1];
      this.chart.appendChild(Charts.number(last ? Number(last[y]) : null, this.names[y]));
    } else if (chart === "bar") {
      const bars = series.map((s) => {
        const latest = s.points.reduce((a, b) => (b[0] >= a[0] ? b : a));
        return { name: s.name, value: latest[1] };
      });
      this.chart.appendChild(Charts.bar(bars, { label: this.panel.title }));
    } else {
      const time = x < 0 || /^(WINDOWSTART|WINDOWEND|ROWTIME)$/i.test(this.names[x]) || /^TIMESTAMP/i.test(this.types[x] || "");
      this.chart.appendChild(Charts.line(series, { time, label: this.panel.title }));
    }
  }
}

PanelView.Collector = class {
  constructor() { this.meta = null; this.rows = []; }
  onMeta(meta) { this.meta = meta; }
  onRow(row) { this.rows.push(row); }
};

const Dashboards = (() => {
  let list = [];
  let current = null;
  let views = [];
  let editing = null; // panel index, or -1 for a new one
  let visible = false;

  function status(text) { $("dashboard-status").textContent = text; }

  async function loadList() {
    list = await api("GET", "/api/dashboards");
    const select = $("dashboard-select");
    select.textContent = "";
    select.appendChild(h("option", { value: "" }, list.length ? "Choose…" : "(none yet)"));
    for (const d of list) select.appendChild(h("option", { value: d.id }, d.title));
    select.value = current ? current.id : "";
  }

  function stopViews() {
    views.forEach((v) => v.stop());
    views = [];
  }

  function render() {
    stopViews();
    const panels = $("panels");
    panels.textContent = "";
    const has = !!current;
    for (const id of ["panel-add", "dashboard-export", "dashboard-delete"]) $(id).disabled = !has;
    $("dashboard-title").textContent = has ? current.title : "";
    if (!has) {
      panels.appendChild(h("p", { class: "muted" }, "Choose a dashboard or create one. A panel is a SQL query and a chart."));
      return;
    }
    if (current.panels.length === 0) panels.appendChild(h("p", { class: "muted" }, "No panels yet: Add panel."));
    current.panels.forEach((p, i) => {
      const view = new PanelView(p, i, api_);
      views.push(view);
      panels.appendChild(view.element);
      view.start();
    });
  }

  async function save() {
    current = await api("PUT", `/api/dashboards/${encodeURIComponent(current.id)}`, current);
    status(`Saved ${new Date(current.updatedMs).toLocaleTimeString()}.`);
    await loadList();
  }

  async function open(id) {
    hideError($("dashboard-error"));
    if (!id) { current = null; render(); return; }
    if (current && current.id === id && views.length === current.panels.length) return;
    try {
      current = await api("GET", `/api/dashboards/${encodeURIComponent(id)}`);
    } catch (e) {
      current = null;
      showError($("dashboard-error"), e);
    }
    $("dashboard-select").value = current ? current.id : "";
    render();
  }

  function slug(title) {
    const base = title.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-+|-+$/g, "").slice(0, 40) || "dashboard";
    let id = base, n = 2;
    while (list.some((d) => d.id === id)) id = `${base}-${n++}`;
    return id;
  }

  function editPanel(index) {
    editing = index;
    const p = index >= 0 ? current.panels[index] : { title: "", sql: "", chart: "line", refreshSecs: 5 };
    $("panel-title").value = p.title;
    $("panel-sql").value = p.sql;
    $("panel-chart").value = p.chart;
    $("panel-refresh").value = p.refreshSecs || 5;
    $("panel-x").value = p.x || "";
    $("panel-y").value = p.y || "";
    $("panel-series").value = p.series || "";
    hideError($("panel-error"));
    $("panel-dialog").showModal();
    $("panel-title").focus();
  }

  async function savePanel(event) {
    event.preventDefault();
    const optional = (id) => $(id).value.trim() || undefined;
    const panel = {
      title: $("panel-title").value.trim(),
      sql: $("panel-sql").value.trim(),
      chart: $("panel-chart").value,
      refreshSecs: isPush($("panel-sql").value) ? undefined : Math.max(1, Number($("panel-refresh").value) || 5),
      x: optional("panel-x"),
      y: optional("panel-y"),
      series: optional("panel-series"),
    };
    if (!panel.title || !panel.sql) { showError($("panel-error"), new Error("A panel needs a title and SQL.")); return; }
    const before = current.panels.slice();
    if (editing >= 0) current.panels[editing] = panel; else current.panels.push(panel);
    try {
      await save();
      $("panel-dialog").close();
      render();
    } catch (e) {
      current.panels = before;
      showError($("panel-error"), e);
    }
  }

  async function removePanel(index) {
    if (!confirm(`Remove the panel "${current.panels[index].title}"?`)) return;
    current.panels.splice(index, 1);
    try { await save(); } catch (e) { showError($("dashboard-error"), e); }
    render();
  }

  async function create(event) {
    event.preventDefault();
    const title = $("dashboard-title-input").value.trim();
    if (!title) return;
    const dashboard = { id: slug(title), title, panels: [] };
    try {
      current = await api("PUT", `/api/dashboards/${encodeURIComponent(dashboard.id)}`, dashboard);
      $("dashboard-dialog").close();
      await loadList();
      location.hash = `#dashboards/${encodeURIComponent(current.id)}`;
      render();
    } catch (e) {
      $("dashboard-dialog").close();
      showError($("dashboard-error"), e);
    }
  }

  function exportCurrent() {
    const { id, title, panels } = current;
    const blob = new Blob([JSON.stringify({ id, title, panels }, null, 2)], { type: "application/json" });
    const a = h("a", { href: URL.createObjectURL(blob), download: `${id}.json` });
    document.body.appendChild(a);
    a.click();
    a.remove();
    status(`Exported ${id}.json.`);
  }

  async function importFile(event) {
    const file = event.target.files[0];
    event.target.value = "";
    if (!file) return;
    hideError($("dashboard-error"));
    try {
      const parsed = JSON.parse(await file.text());
      const title = String(parsed.title || file.name.replace(/\.json$/, ""));
      const dashboard = { id: parsed.id && !list.some((d) => d.id === parsed.id) ? parsed.id : slug(title), title, panels: parsed.panels || [] };
      current = await api("PUT", `/api/dashboards/${encodeURIComponent(dashboard.id)}`, dashboard);
      await loadList();
      location.hash = `#dashboards/${encodeURIComponent(current.id)}`;
      render();
      status(`Imported ${current.title}.`);
    } catch (e) {
      showError($("dashboard-error"), e);
    }
  }

  async function remove() {
    if (!current || !confirm(`Delete the dashboard "${current.title}"?`)) return;
    try {
      await api("DELETE", `/api/dashboards/${encodeURIComponent(current.id)}`);
      current = null;
      await loadList();
      location.hash = "#dashboards";
      render();
    } catch (e) {
      showError($("dashboard-error"), e);
    }
  }

  async function show(id) {
    visible = true;
    try {
      await loadList();
    } catch (e) {
      showError($("dashboard-error"), e);
    }
    await open(id);
  }

  function hide() {
    if (!visible) return;
    visible = false;
    stopViews();
    current = null;
  }

  function init() {
    $("dashboard-select").addEventListener("change", (e) => {
      location.hash = e.target.value ? `#dashboards/${encodeURIComponent(e.target.value)}` : "#dashboards";
    });
    $("dashboard-new").addEventListener("click", () => {
      $("dashboard-title-input").value = "";
      $("dashboard-dialog").showModal();
    });
    $("dashboard-form").addEventListener("submit", create);
    $("panel-add").addEventListener("click", () => editPanel(-1));
    $("panel-form").addEventListener("submit", savePanel);
    $("dashboard-export").addEventListener("click", exportCurrent);
    $("dashboard-import").addEventListener("change", importFile);
    $("dashboard-delete").addEventListener("click", remove);
    for (const b of document.querySelectorAll("dialog [data-close]")) {
      b.addEventListener("click", () => b.closest("dialog").close());
    }
  }

  const api_ = { editPanel, removePanel };
  return { init, show, hide };
})();

// ---- start -----------------------------------------------------------------------------------

async function serverInfo() {
  try {
    const info = await api("GET", "/info");
    $("server-info").textContent = `server ${info.KsqlServerInfo.version} · ${info.KsqlServerInfo.serverStatus.toLowerCase()}`;
  } catch (e) {
    $("server-info").textContent = "server unreachable";
  }
}

Editor.init();
Dashboards.init();
window.addEventListener("hashchange", route);
route();
serverInfo();
