// ooblab lab page: renders the state the server streams (server-sent
// events) and posts actions with the lab token in the X-Lab-Token header.
"use strict";
const token = new URLSearchParams(location.search).get("token") || "";
const $ = (sel, el = document) => el.querySelector(sel);
let state = null;
let pendingCode = null; // {host, vm, action, via} awaiting the operator's app code

function el(tag, attrs = {}, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? "" : v);
  }
  for (const k of kids) if (k) e.append(k);
  return e;
}

async function post(path, body) {
  const r = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-Lab-Token": token },
    body: JSON.stringify(body),
  });
  const out = await r.json().catch(() => ({ error: r.statusText }));
  if (!r.ok) throw new Error(out.error || r.statusText);
  return out;
}

function status(msg) { $("#conn").textContent = msg; }

async function run(path, body, label) {
  status(label + "…");
  try {
    const row = await post(path, body);
    status(label + ": " + row.outcome);
    if (row.needs_code) askCode(body);
  } catch (e) {
    status(label + ": " + e.message);
  }
}

function askCode(body) {
  pendingCode = body;
  $("#code-label").textContent = `App code for ${body.vm} on ${body.host}`;
  $("#code-box").hidden = false;
  $("#code-input").value = "";
  $("#code-input").focus();
}

function spark(hist) {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("viewBox", "0 0 100 28");
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("role", "img");
  const ok = (hist || []).filter((v) => v >= 0);
  const max = Math.max(1, ...ok);
  const n = Math.max(1, (hist || []).length - 1);
  const pts = (hist || []).map((v, i) => `${(i * 100) / n},${v < 0 ? 28 : 27 - (v / max) * 25}`).join(" ");
  svg.setAttribute("aria-label", `latency history, last ${ok.length ? ok[ok.length - 1].toFixed(1) + " ms" : "none"}`);
  const pl = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
  pl.setAttribute("points", pts);
  svg.append(pl);
  return svg;
}

function channel(name, c) {
  const up = c.up;
  return el("div", { class: "channel " + (up ? "up" : "down") },
    el("div", {}, el("strong", { text: name + " " }), el("span", { class: "state", text: up ? "UP" : "DOWN" }),
      el("span", { text: up ? ` ${c.latency_ms.toFixed(1)} ms` : "" })),
    spark(c.history),
    c.error ? el("div", { class: "err", text: c.error }) : null);
}

function uptime(s) {
  if (!s) return "";
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
  return h ? `${h}h${m}m` : `${m}m${s % 60}s`;
}

function hostCard(h) {
  const viaSel = el("select", { id: `via-${h.name}`, "aria-label": `Channel for ${h.name}` },
    el("option", { value: "auto", text: "auto (VMM-I, else OOB-I)" }),
    el("option", { value: "vmmi", text: "VMM-I only" }),
    el("option", { value: "oob", text: "OOB-I only (through the BMC)" }));
  const via = () => $(`#via-${CSS.escape(h.name)}`)?.value || "auto";
  const unplugged = h.link === "unplugged";
  const vmRows = (h.vms || []).map((v) =>
    el("tr", {},
      el("td", {}, el("span", { text: v.name }), v.protected ? el("span", { class: "tag", text: "protected" }) : null),
      el("td", { text: v.state }), el("td", { text: v.vcpus || "" }),
      el("td", { text: v.memory_mib ? v.memory_mib + " MiB" : "" }), el("td", { text: uptime(v.uptime_sec) }),
      el("td", {}, ...["start", "shutdown", "destroy", "reboot", "suspend", "resume"].map((a) =>
        el("button", { type: "button", "aria-label": `${a[0].toUpperCase() + a.slice(1)} ${v.name} on ${h.name}`, text: a,
          onclick: () => run("/api/vm", { host: h.name, vm: v.name, action: a, via: via() }, `${a} ${v.name}`) })))));
  return el("article", { class: "host", "aria-labelledby": `h-${h.name}` },
    el("h3", { id: `h-${h.name}` }, el("span", { text: h.name }),
      el("span", { class: "tag", text: "power " + h.power })),
    el("div", { class: "channels" }, channel("VMM-I", h.vmmi), channel("OOB-I", h.oob)),
    (h.sensors || []).length ? el("ul", { class: "sensors", "aria-label": `Sensors of ${h.name}` },
      ...h.sensors.map((x) => el("li", { class: x.status === "ok" ? "" : "alarm",
        text: `${x.name} ${x.value.toFixed(x.value < 100 ? 1 : 0)} ${x.unit}${x.status === "ok" ? "" : " (" + x.status + ")"}` }))) : null,
    el("div", { class: "row" },
      el("button", { type: "button", "aria-label": `${unplugged ? "Plug" : "Unplug"} VMM-I ${h.name}`,
        text: unplugged ? "Plug VMM-I" : "Unplug VMM-I",
        onclick: () => run("/api/link", { host: h.name, up: unplugged }, `${unplugged ? "plug" : "unplug"} VMM-I ${h.name}`) }),
      el("label", { for: `via-${h.name}`, text: "channel" }), viaSel,
      ...["on", "off", "cycle"].map((a) => el("button", { type: "button", "aria-label": `Power ${a} ${h.name}`, text: "power " + a,
        onclick: () => { if (a === "on" || confirm(`Power ${a} host ${h.name}?`)) run("/api/power", { host: h.name, action: a }, `power ${a} ${h.name}`); } }))),
    h.error ? el("div", { class: "err", text: h.error }) : null,
    el("table", { class: "vms" },
      el("caption", { text: `VMs on ${h.name}` + (h.vms_via ? ` (listed via ${h.vms_via})` : "") }),
      el("thead", {}, el("tr", {}, ...["VM", "state", "vCPUs", "memory", "uptime", "actions"].map((t) => el("th", { text: t })))),
      el("tbody", {}, ...vmRows)));
}

function render() {
  if (!state) return;
  // Keep each host's channel choice and the focus across renders.
  const chosen = {};
  for (const s of document.querySelectorAll("select[id^=via-]")) chosen[s.id] = s.value;
  const focused = document.activeElement?.getAttribute("aria-label");
  const hosts = $("#hosts");
  hosts.replaceChildren(...state.hosts.map(hostCard));
  for (const [id, v] of Object.entries(chosen)) { const s = document.getElementById(id); if (s) s.value = v; }
  if (focused) document.querySelector(`[aria-label="${CSS.escape(focused)}"]`)?.focus();
  $("#commands tbody").replaceChildren(...(state.commands || []).map((c) =>
    el("tr", {}, el("td", { text: new Date(c.time).toLocaleTimeString() }), el("td", { text: c.who }), el("td", { text: c.host }),
      el("td", { text: c.what }), el("td", { text: c.via ? (c.asked_via && c.asked_via !== c.via ? `${c.via} (asked ${c.asked_via})` : c.via) : c.asked_via || "" }),
      el("td", { text: c.latency_ms.toFixed(0) + " ms" }), el("td", { class: c.ok ? "ok" : "fail", text: c.outcome }),
      el("td", { text: c.request_id || "" }))));
  $("#alerts tbody").replaceChildren(...(state.alerts || []).map((a) =>
    el("tr", {}, el("td", { text: new Date(a.time).toLocaleTimeString() }), el("td", { text: a.host }), el("td", { text: a.principal }),
      el("td", { text: a.action }), el("td", { text: a.vm }), el("td", { text: a.reason }))));
  $("#sel tbody").replaceChildren(...(state.sel || []).map((e) =>
    el("tr", {}, el("td", { text: e.time && !e.time.startsWith("0001") ? new Date(e.time).toLocaleTimeString() : "-" }),
      el("td", { text: e.host }), el("td", { text: e.id }), el("td", { text: e.event }))));
}

function connect() {
  const es = new EventSource("/api/events?token=" + encodeURIComponent(token));
  es.addEventListener("state", (ev) => {
    state = JSON.parse(ev.data);
    if ($("#conn").textContent === "connecting…" || $("#conn").textContent === "disconnected; retrying") status("live");
    render();
  });
  es.onerror = () => status("disconnected; retrying");
}

document.addEventListener("DOMContentLoaded", () => {
  $("#code-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    if (!pendingCode) return;
    const body = { ...pendingCode, code: $("#code-input").value };
    $("#code-box").hidden = true;
    pendingCode = null;
    run("/api/vm", body, `${body.action} ${body.vm}`);
  });
  $("#code-cancel").addEventListener("click", () => { $("#code-box").hidden = true; pendingCode = null; });
  connect();
});
