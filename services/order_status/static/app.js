// The trace page of order-status: recent orders (polled), and one flow's timeline.
// Plain DOM and SVG, no dependencies. Every API path is relative, so the page also works
// behind a path prefix. Data is inserted with textContent only, never as HTML.
"use strict";

const ORDERS_POLL_MS = 1500;
const TRACE_POLL_MS = 2000;
const SVG_NS = "http://www.w3.org/2000/svg";
const LANE_HEIGHT = 64;
const LABEL_WIDTH = 130;
const PAD = { top: 34, right: 190, bottom: 16 };
const CANCELLING = /^(order\.cancelled|payment\.refunded|payment\.failed|inventory\.reservation_failed)$/;

const state = { cid: null, ordersTimer: null, traceTimer: null };

function el(tag, attrs = {}, text = "") {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text) node.textContent = text;
  return node;
}

function svg(tag, attrs = {}, text = "") {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text) node.textContent = text;
  return node;
}

async function getJSON(path) {
  const response = await fetch(path, { headers: { Accept: "application/json" } });
  if (!response.ok) {
    const error = new Error(`${path}: HTTP ${response.status}`);
    error.status = response.status;
    throw error;
  }
  return response.json();
}

function clock(iso) {
  if (!iso) return "?";
  const d = new Date(iso);
  return d.toISOString().slice(11, 23);
}

function ms(a, b) {
  return new Date(a).getTime() - new Date(b).getTime();
}

function hop(value) {
  if (value === null || value === undefined) return "";
  return Math.abs(value) < 1000 ? `+${value.toFixed(0)} ms` : `+${(value / 1000).toFixed(2)} s`;
}

// ---- orders ------------------------------------------------------------------------------

async function refreshOrders() {
  const live = document.getElementById("live");
  try {
    const orders = await getJSON("orders?limit=50");
    renderOrders(orders);
    live.textContent = `live · ${orders.length} recent orders · ${new Date().toLocaleTimeString()}`;
    live.classList.remove("down");
  } catch (error) {
    live.textContent = `cannot read orders (${error.message}); retrying`;
    live.classList.add("down");
  }
}

function renderOrders(orders) {
  const body = document.querySelector("#orders tbody");
  const rows = orders.map((order) => {
    const row = el("tr", { "data-order-id": order.orderId, "data-correlation-id": order.correlationId });
    if (order.correlationId === state.cid) row.classList.add("selected");
    row.append(
      el("td", { class: "mono", title: order.orderId }, order.orderId.slice(0, 8)),
      el("td", { class: "mono cid", title: order.correlationId }, order.correlationId),
    );
    const status = el("td");
    status.append(el("span", { class: `status status-${order.status}` }, order.status));
    if (order.reason) status.append(el("span", { class: "reason" }, ` ${order.reason}`));
    row.append(status, el("td", { class: "mono" }, clock(order.updatedAt)));
    row.addEventListener("click", () => openTrace(order.correlationId));
    return row;
  });
  body.replaceChildren(...rows);
  document.getElementById("orders-empty").hidden = orders.length > 0;
}

// ---- trace -------------------------------------------------------------------------------

function openTrace(cid) {
  state.cid = cid;
  history.replaceState(null, "", `#cid=${encodeURIComponent(cid)}`);
  document.querySelectorAll("#orders tbody tr").forEach((row) => {
    row.classList.toggle("selected", row.dataset.correlationId === cid);
  });
  document.getElementById("trace-panel").hidden = false;
  document.getElementById("trace-cid").textContent = cid;
  clearInterval(state.traceTimer);
  refreshTrace();
  state.traceTimer = setInterval(refreshTrace, TRACE_POLL_MS);
}

async function refreshTrace() {
  const cid = state.cid;
  const path = `traces/${encodeURIComponent(cid)}`;
  let events = [];
  let letters = [];
  let dlqNote = "";
  try {
    events = (await getJSON(path)).events;
  } catch (error) {
    if (error.status !== 404) throw error;
  }
  try {
    letters = (await getJSON(`${path}/dead-letters`)).deadLetters;
  } catch (error) {
    dlqNote = " · DLQ not readable by order-status";
  }
  if (cid !== state.cid) return; // another order was opened meanwhile
  renderTrace(cid, events, letters, dlqNote);
}

// The service a dead letter belongs to: its consumer name without the partition suffix.
function consumerService(consumer) {
  return consumer.replace(/-\d+$/, "");
}

function model(events, letters) {
  const byId = new Map(events.map((e) => [e.eventId, e]));
  const items = events.map((e) => ({
    kind: "event",
    id: e.eventId,
    label: e.eventType,
    lane: e.service,
    at: e.occurredAt,
    cause: e.causationId && byId.has(e.causationId) ? byId.get(e.causationId) : null,
    missing: Boolean(e.causationId) && !byId.has(e.causationId),
    cancelling: CANCELLING.test(e.eventType),
    raw: e,
  }));
  for (const d of letters) {
    const held = [d.eventId, d.causationId].map((id) => byId.get(id)).find(Boolean) || null;
    items.push({
      kind: "dlq",
      id: `dlq:${d.consumer}:${d.eventId || d.failedAt}`,
      label: `${d.eventType} ✗ ${d.reason}`,
      lane: consumerService(d.consumer),
      at: d.failedAt || (held && held.occurredAt) || (events[0] && events[0].occurredAt),
      cause: held,
      missing: !held,
      cancelling: false,
      raw: d,
    });
  }
  items.sort((a, b) => ms(a.at, b.at));
  const lanes = [];
  for (const item of items) if (!lanes.includes(item.lane)) lanes.push(item.lane);
  return { items, lanes };
}

function renderTrace(cid, events, letters, dlqNote) {
  const { items, lanes } = model(events, letters);
  const summary = document.getElementById("trace-summary");
  const missing = items.filter((i) => i.missing).length;
  if (!items.length) {
    summary.textContent = `No events for ${cid} yet${dlqNote}.`;
  } else {
    const span = ms(items[items.length - 1].at, items[0].at);
    summary.textContent =
      `${events.length} events over ${hop(span).slice(1) || "0 ms"} · ${lanes.length} services · ` +
      `${letters.length} dead-lettered · ${missing} missing links${dlqNote}`;
  }
  drawTimeline(items, lanes);
  fillTable(items);
}

function drawTimeline(items, lanes) {
  const box = document.getElementById("timeline");
  const width = Math.max(640, box.clientWidth || 900);
  const height = PAD.top + lanes.length * LANE_HEIGHT + PAD.bottom;
  const root = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img" });
  root.append(arrowMarker("arrow", "#5b6b7f"), arrowMarker("arrow-dlq", "#c0392b"));
  if (!items.length) {
    box.replaceChildren(root);
    return;
  }
  const t0 = new Date(items[0].at).getTime();
  const span = Math.max(1, new Date(items[items.length - 1].at).getTime() - t0);
  const x = (at) => LABEL_WIDTH + ((new Date(at).getTime() - t0) / span) * (width - LABEL_WIDTH - PAD.right);
  const y = (lane) => PAD.top + lanes.indexOf(lane) * LANE_HEIGHT + LANE_HEIGHT / 2;

  lanes.forEach((lane, i) => {
    const g = svg("g", { class: "lane", "data-service": lane });
    const top = PAD.top + i * LANE_HEIGHT;
    g.append(
      svg("rect", { x: 0, y: top, width, height: LANE_HEIGHT, class: i % 2 ? "lane-bg odd" : "lane-bg" }),
      svg("text", { x: 10, y: top + LANE_HEIGHT / 2 + 4, class: "lane-label" }, lane),
    );
    root.append(g);
  });
  for (let k = 0; k <= 4; k += 1) {
    const tx = LABEL_WIDTH + (k / 4) * (width - LABEL_WIDTH - PAD.right);
    root.append(
      svg("line", { x1: tx, x2: tx, y1: PAD.top - 6, y2: height - PAD.bottom, class: "tick" }),
      svg("text", { x: tx, y: PAD.top - 12, class: "tick-label" }, hop((k / 4) * span) || "0 ms"),
    );
  }
  for (const item of items) {
    if (!item.cause) continue;
    const x1 = x(item.cause.occurredAt);
    const y1 = y(item.cause.service);
    const x2 = x(item.at);
    const y2 = y(item.lane);
    const bend = Math.max(24, (x2 - x1) / 2);
    root.append(
      svg("path", {
        d: `M ${x1} ${y1} C ${x1 + bend} ${y1}, ${x2 - bend} ${y2}, ${x2 - 9} ${y2}`,
        class: item.kind === "dlq" ? "arrow dlq" : "arrow",
        "marker-end": item.kind === "dlq" ? "url(#arrow-dlq)" : "url(#arrow)",
      }),
    );
  }
  const laneEnds = new Map();
  for (const item of items) {
    const classes = ["event", item.kind === "dlq" ? "dlq" : "", item.missing ? "missing" : "",
      item.cancelling ? "cancelled" : ""].filter(Boolean).join(" ");
    const g = svg("g", { class: classes, "data-event-type": item.raw.eventType, "data-kind": item.kind });
    const cx = x(item.at);
    const cy = y(item.lane);
    const mark = item.kind === "dlq"
      ? svg("rect", { x: cx - 7, y: cy - 7, width: 14, height: 14, transform: `rotate(45 ${cx} ${cy})` })
      : svg("circle", { cx, cy, r: 7 });
    const title = svg("title", {}, `${item.label}\n${item.lane} · ${item.at}`);
    const nearRight = cx > width - PAD.right - 40; // keep long labels inside the drawing
    const left = nearRight ? cx - 11 - labelWidth(item.label) : cx + 11;
    const below = left < (laneEnds.get(item.lane) ?? -Infinity) + 6; // would overlap: go below
    if (!below) laneEnds.set(item.lane, left + labelWidth(item.label));
    const label = svg("text", {
      x: left, y: below ? cy + 21 : cy - 10, class: "event-label",
    }, item.label);
    g.append(mark, title, label);
    root.append(g);
  }
  box.replaceChildren(root);
}

function labelWidth(text) {
  return text.length * 7.3; // 12px monospace
}

function arrowMarker(id, color) {
  const marker = svg("marker", {
    id, viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 9, markerHeight: 9,
    markerUnits: "userSpaceOnUse", orient: "auto",
  });
  marker.append(svg("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: color }));
  return marker;
}

function fillTable(items) {
  const rows = items.map((item) => {
    const row = el("tr", { class: item.kind === "dlq" ? "dlq" : item.missing ? "missing" : "" });
    let note = "";
    if (item.kind === "dlq") note = `dead-lettered at ${item.raw.consumer}: ${item.raw.reason} ${item.raw.error || ""}`;
    else if (item.missing) note = `missing link: cause ${item.raw.causationId} not in trace`;
    row.append(
      el("td", { class: "mono" }, clock(item.at)),
      el("td", { class: "mono" }, item.cause ? hop(ms(item.at, item.cause.occurredAt)) : ""),
      el("td", {}, item.lane),
      el("td", { class: "mono" }, item.kind === "dlq" ? item.raw.eventType : item.label),
      el("td", {}, note),
    );
    return row;
  });
  document.querySelector("#trace-events tbody").replaceChildren(...rows);
}

// ---- start -------------------------------------------------------------------------------

function start() {
  refreshOrders();
  state.ordersTimer = setInterval(refreshOrders, ORDERS_POLL_MS);
  const match = /cid=([^&]+)/.exec(location.hash);
  if (match) openTrace(decodeURIComponent(match[1]));
}

start();
