// Tollgate's dashboard: plain DOM and inline SVG over the admin API, nothing fetched from
// elsewhere (gateways run in closed networks). Every number shown comes from the API; elements
// that show one carry it in `data-value` as the API sent it.
"use strict";

const SESSION_KEY = "tollgate.session";
const LOG_PAGE = 20;
/** The seed's provider names, in the API's order, and the names people know them by. */
const PROVIDERS = ["gemini", "openai", "anthropic", "mistral", "tavily", "serper", "metaphor",
  "firecrawl", "stability"];
const PROVIDER_NAMES = { gemini: "Gemini", openai: "OpenAI", anthropic: "Anthropic",
  mistral: "Mistral", tavily: "Tavily", serper: "Serper", metaphor: "Exa", exa: "Exa",
  firecrawl: "Firecrawl", stability: "Stability AI" };
/** Tollgate's provider names (routes, filters) from the seed's. */
const ROUTE_NAMES = { metaphor: "exa" };
const TOKEN_PROVIDERS = ["gemini", "openai", "anthropic", "mistral"];

const state = { token: null, role: null, ownUser: null, user: null, period: null,
  logOffset: 0, view: null, overview: null, plans: [] };

// ---- formatting -------------------------------------------------------------------------

const numberFormat = new Intl.NumberFormat(undefined);
const centsFormat = new Intl.NumberFormat(undefined, { style: "currency", currency: "USD" });
const subCentFormat = new Intl.NumberFormat(undefined, { style: "currency", currency: "USD",
  minimumFractionDigits: 4, maximumFractionDigits: 4 });

/** Dollars to the cent; amounts under a cent with four decimals, so they do not read as 0. */
function money(dollars) {
  const d = Number(dollars) || 0;
  if (d === 0 || Math.abs(d) >= 0.01) return centsFormat.format(d);
  if (Math.abs(d) >= 0.0001) return subCentFormat.format(d);
  return "<" + subCentFormat.format(0.0001);
}
const count = (n) => numberFormat.format(Number(n) || 0);
function percent(p) {
  const v = Number(p) || 0;
  return numberFormat.format(Math.round(v * (v < 10 ? 10 : 1)) / (v < 10 ? 10 : 1)) + " %";
}
const providerName = (p) => PROVIDER_NAMES[p] || p;
const dateTime = (iso) => (iso ? new Date(iso).toLocaleString() : "");
const date = (iso) => (iso ? new Date(iso).toLocaleDateString() : "");
function periodLabel(key) {
  const [y, m] = key.split("-").map(Number);
  return new Date(Date.UTC(y, m - 1, 15)).toLocaleDateString(undefined,
    { year: "numeric", month: "long", timeZone: "UTC" });
}

// ---- DOM --------------------------------------------------------------------------------

const $ = (id) => document.getElementById(id);

/** An element with attributes (`on*` functions become listeners) and children. */
function el(tag, attrs, ...children) {
  const svg = ["svg", "rect", "line", "text", "title", "g", "polyline"].includes(tag);
  const node = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag)
    : document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}
const fill = (id, ...children) => $(id).replaceChildren(...children.flat());
/** A table: `head` the column titles (a `#` prefix right-aligns), `rows` arrays of cells. */
function table(id, head, rows, empty) {
  const num = head.map((h) => h.startsWith("#"));
  const cells = (row, tag) => row.map((c, i) => el(tag, { class: num[i] ? "num" : null }, c));
  fill(id,
    el("thead", {}, el("tr", {}, cells(head.map((h) => h.replace(/^#/, "")), "th"))),
    el("tbody", {}, rows.length ? rows.map((r) => el("tr", {}, cells(r, "td")))
      : el("tr", {}, el("td", { colspan: head.length, class: "hint" }, empty || "Nothing yet."))));
}
const value = (text, v) => el("span", { "data-value": v }, text);

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

// ---- API --------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, detail) { super(detail); this.status = status; }
}

async function api(path, options = {}) {
  const headers = { Authorization: "Bearer " + state.token };
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(path, { method: options.method || "GET", headers,
    body: options.body === undefined ? undefined : JSON.stringify(options.body) });
  const body = await res.json().catch(() => null);
  if (!res.ok) throw new ApiError(res.status, (body && body.detail) || res.statusText);
  return body;
}
const enc = encodeURIComponent;

// ---- session ----------------------------------------------------------------------------

function saveSession() {
  sessionStorage.setItem(SESSION_KEY, JSON.stringify({ token: state.token, user: state.user }));
}

async function signIn(token, user) {
  state.token = token;
  const who = (await api("/api/session")).data;
  state.role = who.role;
  state.ownUser = who.user_id || null;
  state.user = state.role === "user" ? state.ownUser : (user || null);
  saveSession();
  $("sign-in").hidden = true;
  $("nav").hidden = false;
  $("nav-operator").hidden = state.role !== "admin";
  $("who").textContent = state.role === "admin" ? "operator" : "signed in as " + state.ownUser;
  $("user-pick").hidden = state.role !== "admin";
  await route();
}

function signOut() {
  sessionStorage.removeItem(SESSION_KEY);
  Object.assign(state, { token: null, role: null, ownUser: null, user: null, period: null });
  $("nav").hidden = true;
  $("user-view").hidden = true;
  $("operator-view").hidden = true;
  $("sign-in").hidden = false;
  $("token").value = "";
  $("new-key").hidden = true;
  history.replaceState(null, "", "/dashboard");
  showError("");
}

/** `#operator` or `#user` picks the view; without one, operators start on theirs. */
async function route() {
  showError("");
  const wanted = location.hash === "#operator" ||
    (location.hash !== "#user" && state.role === "admin") ? "operator" : "user";
  if (wanted === "operator" && state.role !== "admin") {
    showError("The operator view needs an admin token; your key shows your own usage.");
    history.replaceState(null, "", "#user");
    return showUser();
  }
  return wanted === "operator" ? showOperator() : showUser();
}

function markNav(view) {
  state.view = view;
  $("nav-operator").setAttribute("aria-current", view === "operator" ? "page" : "false");
  $("nav-user").setAttribute("aria-current", view === "user" ? "page" : "false");
}

// ---- the user's view ----------------------------------------------------------------------

async function showUser() {
  markNav("user");
  $("operator-view").hidden = true;
  $("user-view").hidden = false;
  if (!state.user) {
    $("user-id").value = "";
    fill("summary", el("p", { class: "hint" }, "Choose a user to see their usage."));
    return;
  }
  $("user-id").value = state.user;
  await loadUser();
}

async function loadUser() {
  const user = enc(state.user);
  const q = state.period ? "?billing_period=" + enc(state.period) : "";
  const [dash, daily, models, trends] = await Promise.all([
    api(`/api/subscription/dashboard/${user}${q}`),
    api(`/api/subscription/usage/${user}/daily${q}`),
    api(`/api/subscription/usage/${user}/models${q}`),
    api(`/api/subscription/usage/${user}/trends?months=12`),
  ]);
  const d = dash.data;
  const u = d.current_usage;
  state.period = u.billing_period;
  $("user-title").textContent = `${state.user} · ${u.limits.plan_name} plan`;
  periodPicker(trends.data.periods, u.billing_period);
  const gauges = gaugesOf(u);
  renderSummary(d, u);
  renderGauges(gauges);
  renderCapBanner(gauges, u, models.data.models);
  renderProviders(u);
  renderModels(models.data.models);
  renderDaily(daily.data, u);
  renderProjection(gauges, u, d.projections);
  renderTrends(trends.data);
  state.logOffset = 0;
  await Promise.all([loadAlerts(), loadLogs(), loadKeys(), loadBilling(),
    loadRecommendations()]);
}

function periodPicker(trendPeriods, selected) {
  const keys = [...new Set([...trendPeriods, selected])].sort().reverse();
  fill("period", keys.map((k) => el("option", { value: k, selected: k === selected },
    periodLabel(k))));
}

/** Every limit of the plan (0 means none) with its use in the period. */
function gaugesOf(u) {
  const limits = u.limits.limits;
  const pcts = u.usage_percentages;
  const out = [];
  const add = (key, label, used, max, kind, pctKey) => {
    if (!max) return;
    const pct = pcts[pctKey || key] !== undefined ? pcts[pctKey || key] : (used / max) * 100;
    out.push({ key, label, used, max, kind, pct });
  };
  add("monthly_cost", "Cost cap", u.total_cost, limits.monthly_cost, "money", "cost");
  add("total_calls", "Calls, all providers", u.total_calls, limits.total_calls, "calls");
  add("total_tokens", "Tokens, all providers", u.total_tokens, limits.total_tokens, "tokens");
  for (const p of PROVIDERS) {
    const b = u.provider_breakdown[p] || { calls: 0, tokens: 0 };
    add(`${p}_calls`, `${providerName(p)} calls`, b.calls, limits[`${p}_calls`], "calls");
    if (TOKEN_PROVIDERS.includes(p)) {
      add(`${p}_tokens`, `${providerName(p)} tokens`, b.tokens, limits[`${p}_tokens`], "tokens");
    }
  }
  return out;
}

const level = (pct) => (pct >= 100 ? "100" : pct >= 90 ? "90" : pct >= 80 ? "80" : "ok");
const amount = (kind, v) => (kind === "money" ? money(v) : count(v));

/** A bar on a scale that reaches past 100 % when the use does, with ticks at 80/90/100 %. */
function gaugeBar(pct) {
  const scale = Math.max(100, pct);
  const x = (p) => (p / scale) * 300;
  return el("svg", { viewBox: "0 0 300 16", preserveAspectRatio: "none", role: "img",
    "aria-label": `${percent(pct)} used` },
  el("rect", { class: "track", x: 0, y: 2, width: 300, height: 12, rx: 3 }),
  el("rect", { class: `fill-${level(pct)}`, x: 0, y: 2, width: x(Math.min(pct, scale)), height: 12,
    rx: 3 }),
  [80, 90, 100].map((t) => el("line", { class: "tick", x1: x(t), x2: x(t), y1: 0, y2: 16 })));
}

function renderGauges(gauges) {
  if (!gauges.length) {
    fill("gauges", el("p", { class: "hint" }, "This plan sets no limits."));
    return;
  }
  fill("gauges", gauges.map((g) => {
    const over = g.used - g.max;
    return el("div", { class: `gauge level-${level(g.pct)}`, "data-limit": g.key,
      "data-pct": g.pct },
    el("div", { class: "head" }, el("span", { class: "name" }, g.label),
      el("span", { class: "pct" }, percent(g.pct))),
    gaugeBar(g.pct),
    el("div", { class: "detail" }, `${amount(g.kind, g.used)} of ${amount(g.kind, g.max)}`,
      g.pct >= 100 ? el("span", { class: "over" },
        over > 0 ? ` · exceeded by ${amount(g.kind, over)}` : " · limit reached") : null));
  }));
}

/** What the user most needs to know when a limit is used up: which, by how much, what spent
 * it, when it resets and what to do. */
function renderCapBanner(gauges, u, models) {
  const full = gauges.filter((g) => g.pct >= 100);
  if (!full.length) {
    $("cap-banner").hidden = true;
    return;
  }
  const top = Object.entries(u.provider_breakdown).filter(([, s]) => s.cost > 0)
    .sort((a, b) => b[1].cost - a[1].cost).slice(0, 3);
  const spentBy = top.map(([p, s]) => `${providerName(p)} ${money(s.cost)}`).join(", ");
  const model = models[0];
  fill("cap-banner",
    el("strong", {}, full.length === 1 ? "A limit is used up" : `${full.length} limits are used up`),
    full.map((g) => el("p", { class: "over-line", "data-limit": g.key },
      `${g.label}: ${amount(g.kind, g.used)} of ${amount(g.kind, g.max)} (${percent(g.pct)})`,
      g.used > g.max ? ` — exceeded by ${amount(g.kind, g.used - g.max)}.` : ".")),
    spentBy ? el("p", {}, `Spent by: ${spentBy}` +
      (model ? `; the costliest model is ${model.model} (${money(model.cost)}).` : ".")) : null,
    el("p", {}, `Calls that need ${full.length === 1 ? "it" : "them"} are refused until the ` +
      `period resets on ${date(u.period_end)}. To continue now, ask your operator for a larger ` +
      "plan; to spend less, move the costliest calls to a cheaper model."));
  $("cap-banner").hidden = false;
}

function renderSummary(d, u) {
  const tile = (label, text, v, id) => el("div", { class: "tile", id },
    el("div", { class: "label" }, label), el("div", { class: "value" }, value(text, v)));
  const status = { active: "Within limits", warning: "Near a limit",
    limit_reached: "Limit reached" }[u.usage_status] || u.usage_status;
  fill("summary",
    tile("Calls", count(u.total_calls), u.total_calls, "sum-calls"),
    tile("Tokens", count(u.total_tokens), u.total_tokens, "sum-tokens"),
    tile("Cost", money(u.total_cost), u.total_cost, "sum-cost"),
    tile("Status", status, u.usage_status, "sum-status"),
    tile("Period", `${date(u.period_start)} – ${date(u.period_end)}`, u.billing_period,
      "sum-period"));
}

/** Horizontal bars, one per row `{label, value, text}`. */
function hbars(rows) {
  const max = Math.max(...rows.map((r) => r.value), 0) || 1;
  return el("div", { class: "hbar" }, rows.map((r) => [
    el("span", {}, r.label),
    el("svg", { viewBox: "0 0 100 14", preserveAspectRatio: "none", "aria-hidden": "true" },
      el("rect", { class: "track", x: 0, y: 2, width: 100, height: 10, rx: 2 }),
      el("rect", { class: "fill-ok", x: 0, y: 2, width: (r.value / max) * 100, height: 10, rx: 2 })),
    el("span", { class: "num" }, r.text),
  ]));
}

function renderProviders(u) {
  const rows = Object.entries(u.provider_breakdown).filter(([, s]) => s.calls > 0)
    .sort((a, b) => b[1].cost - a[1].cost);
  if (!rows.length) return fill("by-provider", el("p", { class: "hint" }, "No calls this period."));
  fill("by-provider", hbars(rows.map(([p, s]) => ({ label: providerName(p), value: s.cost,
    text: value(`${money(s.cost)} · ${count(s.calls)} calls`, s.cost) }))));
}

function renderModels(models) {
  if (!models.length) return fill("by-model", el("p", { class: "hint" }, "No calls this period."));
  fill("by-model", hbars(models.slice(0, 8).map((m) => ({ label: m.model, value: m.cost,
    text: value(`${money(m.cost)} · ${providerName(m.provider)}`, m.cost) }))));
}

/** A bar chart: `bars` of `{label, value, title, err}`, an optional dashed `cap` line. */
function barChart(bars, format, cap) {
  const w = 640, h = 180, left = 56, bottom = 22, top = 8;
  const max = Math.max(...bars.map((b) => b.value), cap || 0, 0) || 1;
  const step = (w - left) / Math.max(bars.length, 1);
  const y = (v) => h - bottom - (v / max) * (h - bottom - top);
  const every = Math.ceil(bars.length / 12);
  return el("svg", { class: "chart", viewBox: `0 0 ${w} ${h}`, role: "img",
    "aria-label": bars.map((b) => `${b.label}: ${format(b.value)}`).join("; ") },
  el("line", { class: "axis", x1: left, x2: w, y1: h - bottom, y2: h - bottom }),
  el("text", { x: left - 4, y: top + 8, "text-anchor": "end" }, format(max)),
  el("text", { x: left - 4, y: h - bottom, "text-anchor": "end" }, format(0)),
  bars.map((b, i) => el("g", {},
    el("rect", { class: b.err ? "bar err" : "bar", x: left + i * step + step * 0.15,
      y: y(b.value), width: step * 0.7, height: Math.max(h - bottom - y(b.value), 0) },
    el("title", {}, b.title || `${b.label}: ${format(b.value)}`)),
    i % every === 0 ? el("text", { x: left + i * step + step / 2, y: h - 6,
      "text-anchor": "middle" }, b.label) : null)),
  cap ? el("line", { class: "cap", x1: left, x2: w, y1: y(cap), y2: y(cap) }) : null,
  cap ? el("text", { x: w - 2, y: y(cap) - 3, "text-anchor": "end" }, "cap " + format(cap)) : null);
}

function renderDaily(daily, u) {
  const bars = daily.days.map((d) => ({
    label: String(Number(d.day.slice(8))), value: d.cost, err: d.error_calls > 0 && !d.cost,
    title: `${new Date(d.day + "T00:00:00Z").toLocaleDateString(undefined, { timeZone: "UTC" })}: ` +
      `${count(d.calls)} calls, ${count(d.tokens)} tokens, ${money(d.cost)}` +
      (d.error_calls ? `, ${count(d.error_calls)} failed` : ""),
  }));
  const busiest = daily.days.reduce((a, d) => (d.calls > (a ? a.calls : 0) ? d : a), null);
  fill("daily", barChart(bars, money),
    el("p", { class: "hint" }, `Cost per day (UTC) of ${periodLabel(daily.billing_period)}` +
      (busiest ? `; most calls on the ${Number(busiest.day.slice(8))}th: ${count(busiest.calls)}.`
        : "; no calls.")),
    el("p", { class: "hint" }, `${count(u.total_calls)} calls in all.`));
}

/** Each limit's use extrapolated to the period's end at the pace of the days begun so far. */
function renderProjection(gauges, u, projections) {
  const start = new Date(u.period_start).getTime();
  const end = new Date(u.period_end).getTime();
  const now = Date.now();
  const days = Math.round((end - start) / 86400000);
  const begun = now >= end ? days : Math.min(days, Math.floor((now - start) / 86400000) + 1);
  if (now < start || !gauges.length) {
    return fill("projection", el("p", { class: "hint" }, "Nothing to project."));
  }
  const rows = gauges.map((g) => {
    const projected = g.key === "monthly_cost" ? projections.projected_monthly_cost
      : Math.round((g.used / begun) * days);
    const pct = (projected / g.max) * 100;
    const verdict = pct >= 100 ? el("span", { class: "badge over" },
      g.pct >= 100 ? "used up" : "runs out") : pct >= 80 ? el("span", { class: "badge warning" },
      "near") : el("span", { class: "badge ok" }, "fits");
    return [g.label, amount(g.kind, g.used), value(amount(g.kind, projected), projected),
      amount(g.kind, g.max), percent(pct), verdict];
  });
  fill("projection", el("div", { class: "scroll" }, el("table", { id: "projection-table" })),
    el("p", { class: "hint" }, now >= end ? "The period has ended: what it used."
      : `Day ${begun} of ${days}.`));
  table("projection-table", ["Limit", "#Now", "#At period end", "#Limit", "#Of limit", ""], rows);
}

function renderTrends(t) {
  const bars = t.periods.map((p, i) => ({ label: p.slice(2), value: t.total_cost[i],
    title: `${periodLabel(p)}: ${count(t.total_calls[i])} calls, ${count(t.total_tokens[i])} ` +
      `tokens, ${money(t.total_cost[i])}` }));
  fill("trends", barChart(bars, money),
    el("p", { class: "hint" }, `Cost per billing period, the last ${t.periods.length}.`));
}

async function loadAlerts() {
  const a = (await api(`/api/subscription/alerts/${enc(state.user)}?limit=20`)).data;
  const badge = $("unread-count");
  badge.textContent = count(a.unread_count);
  badge.dataset.value = a.unread_count;
  if (!a.alerts.length) return fill("alerts", el("li", { class: "hint" }, "No alerts."));
  fill("alerts", a.alerts.map((x) => el("li", { class: x.is_read ? "read" : "unread",
    "data-alert": x.id },
  el("div", {}, el("div", { class: `title sev-${x.severity}` }, x.title),
    el("div", {}, x.message), el("div", { class: "hint" }, dateTime(x.created_at))),
  x.is_read ? el("span", { class: "hint" }, "read")
    : el("button", { type: "button", class: "secondary mark-read",
      "aria-label": `Mark "${x.title}" read`,
      onclick: async () => { await api(`/api/subscription/alerts/${x.id}/mark-read`,
        { method: "POST" }); await loadAlerts(); } }, "Mark read"))));
}

async function loadLogs() {
  const q = new URLSearchParams({ user_id: state.user, billing_period: state.period,
    limit: LOG_PAGE, offset: state.logOffset });
  if ($("log-provider").value) q.set("provider", $("log-provider").value);
  const status = $("log-status").value;
  if (status === "refused") q.set("refused", "true");
  else if (status) q.set("status", status);
  const page = await api(`/api/subscription/usage-logs?${q}`);
  // A refused call says why, by its code, beside its status.
  const statusCell = (r) => r.refusal_reason
    ? el("span", { class: "refused", title: r.error_message || null, "data-reason": r.refusal_reason },
      `${r.status_code} refused: ${r.refusal_reason.replaceAll("_", " ")}`)
    : el("span", { title: r.error_message || null }, String(r.status_code));
  table("logs", ["When", "Provider", "Model", "#Status", "#Tokens", "#Cost", "#Time"],
    page.logs.map((r) => [dateTime(r.timestamp), providerName(r.actual_provider_name),
      r.model_used, statusCell(r),
      count(r.tokens_total), value(money(r.cost_total), r.cost_total),
      `${numberFormat.format(r.response_time)} s`]), "No calls match.");
  const from = page.total_count ? state.logOffset + 1 : 0;
  $("logs-page").textContent = `${count(from)}–${count(state.logOffset + page.logs.length)} ` +
    `of ${count(page.total_count)}`;
  $("logs-page").dataset.value = page.total_count;
  $("logs-prev").disabled = state.logOffset === 0;
  $("logs-next").disabled = !page.has_more;
}

async function loadKeys() {
  const keys = (await api(`/api/subscription/keys/${enc(state.user)}`)).data;
  table("keys", ["Key", "Name", "Created", "State"], keys.map((k) => [el("code", {}, k.prefix + "…"),
    k.name || "", date(k.created_at), k.revoked_at ? `revoked ${date(k.revoked_at)}`
      : k.source === "config" ? "configured" : "active"]), "No keys.");
}

async function loadBilling() {
  const b = (await api(`/api/subscription/billing-history/${enc(state.user)}?limit=12`)).data;
  table("billing", ["Period", "Plan", "#Plan price", "#Usage at cost", "#Total", "#Calls", "Status"],
    b.history.map((r) => [periodLabel(r.billing_period), r.plan_name || "", money(r.base_cost),
      money(r.usage_cost), value(money(r.total_cost), r.total_cost), count(r.total_api_calls),
      r.payment_status]), "No closed periods yet: a period is billed once it ends.");
}

/** Shown only where the gateway serves recommendations; a 404 hides the panel. */

/** A recommendation's number as text: nested objects (per provider, say) as `key value` pairs. */
function numberText(v) {
  if (typeof v === "number") return numberFormat.format(v);
  if (v && typeof v === "object") {
    return Object.entries(v).map(([k, n]) => `${providerName(k)} ${numberText(n)}`).join(", ");
  }
  return String(v);
}

async function loadRecommendations() {
  const panel = $("recommendations");
  try {
    const r = (await api(`/api/subscription/recommendations/${enc(state.user)}`)).data;
    const recs = r.recommendations || [];
    panel.hidden = recs.length === 0;
    fill("recommendation-list", recs.map((x) => el("li", { "data-kind": x.kind },
      el("strong", {}, x.title), " ", x.detail,
      x.numbers && Object.keys(x.numbers).length ? el("div", { class: "hint" },
        Object.entries(x.numbers).map(([k, v]) => `${k.replace(/_/g, " ")}: ` +
          numberText(v)).join(" · ")) : null)));
  } catch (e) {
    panel.hidden = true;
    if (!(e instanceof ApiError && e.status === 404)) throw e;
  }
}

// ---- the operator's view ------------------------------------------------------------------

async function showOperator() {
  markNav("operator");
  $("user-view").hidden = true;
  $("operator-view").hidden = false;
  const [overview, config, plans] = await Promise.all([
    api("/api/admin/overview"), api("/api/admin/config"), api("/api/subscription/plans"),
  ]);
  state.overview = overview.data;
  state.plans = plans.data.plans;
  const c = config.data;
  $("op-config").textContent = `Configuration ${c.version.slice(0, 12)} in force since ` +
    `${dateTime(c.loaded_at)} (${c.trigger})` +
    (c.pending_restart.length ? `; pending a restart: ${c.pending_restart.join(", ")}` : "");
  $("op-config").dataset.value = c.version;
  $("op-period").textContent = periodLabel(state.overview.billing_period);
  renderOpUsers();
  const o = state.overview;
  table("op-providers", ["Provider", "#Calls", "#Tokens", "#Cost", "#Failed", "#Refused"],
    o.providers.map((p) => [p.provider_name, count(p.calls), count(p.tokens),
      value(money(p.cost), p.cost), count(p.error_calls),
      el("span", { "data-value": p.refused_calls, title: reasonsText(p.refused_by_reason) || null },
        count(p.refused_calls))]));
  $("op-refusals").textContent = o.refused_calls
    ? `Refused calls this period: ${count(o.refused_calls)} (${reasonsText(o.refused_by_reason)}).`
    : "No calls were refused this period.";
  $("op-refusals").dataset.value = o.refused_calls;
  table("op-models", ["Model", "Provider", "#Calls", "#Cost"], state.overview.top_models.map((m) =>
    [m.model, m.provider_name, count(m.calls), value(money(m.cost), m.cost)]), "No calls yet.");
  fill("op-user", state.overview.users.map((u) => el("option", { value: u.user_id }, u.user_id)));
  fill("user-ids", state.overview.users.map((u) => el("option", { value: u.user_id })));
  fill("op-plan", state.plans.map((p) => el("option", { value: p.id }, p.name)));
  syncPlanSelect();
  await loadOpKeys();
}

/** `{"usage_limit_exceeded": 2, "provider_not_in_plan": 1}` as "2 usage limit exceeded, …". */
function reasonsText(byReason) {
  return Object.entries(byReason || {}).sort((a, b) => b[1] - a[1])
    .map(([reason, n]) => `${count(n)} ${reason.replaceAll("_", " ")}`).join(", ");
}

function renderOpUsers() {
  const needle = $("op-search").value.trim().toLowerCase();
  const users = state.overview.users.filter((u) => !needle ||
    u.user_id.toLowerCase().includes(needle) || u.plan_name.toLowerCase().includes(needle));
  const status = (s) => el("span", { class: "badge " + ({ limit_reached: "over",
    warning: "warning", active: "ok" }[s] || "") }, s.replace("_", " "));
  table("op-users", ["User", "Plan", "Status", "#Calls", "#Cost", "#Of cost cap", ""],
    users.map((u) => [u.user_id, u.plan_name, status(u.usage_status), count(u.calls),
      value(money(u.cost), u.cost), u.cost_cap ? value(percent(u.cost_percentage),
        u.cost_percentage) : "no cap",
      el("button", { type: "button", class: "secondary", "aria-label": `Usage of ${u.user_id}`,
        onclick: () => openUser(u.user_id) }, "Usage")]), "No users match.");
}

function syncPlanSelect() {
  const u = state.overview.users.find((x) => x.user_id === $("op-user").value);
  if (u) $("op-plan").value = u.plan_id;
}

async function loadOpKeys() {
  const user = $("op-user").value;
  if (!user) return table("op-keys", ["Key"], [], "No users.");
  const keys = (await api(`/api/admin/users/${enc(user)}/keys`)).data;
  table("op-keys", ["Key", "Name", "Created", "State", ""], keys.map((k) => [
    el("code", {}, k.prefix + "…"), k.name || "", date(k.created_at),
    k.revoked_at ? `revoked ${date(k.revoked_at)}` : k.source === "config" ? "configured" : "active",
    !k.revoked_at && k.source !== "config" ? el("button", { type: "button", class: "secondary",
      "aria-label": `Revoke ${k.prefix}`, onclick: () => revokeKey(k) }, "Revoke") : ""]),
  "No keys.");
}

async function revokeKey(k) {
  if (!window.confirm(`Revoke ${k.prefix}…? Calls with it are refused from now on.`)) return;
  await api(`/api/admin/keys/${enc(k.id)}`, { method: "DELETE" });
  await loadOpKeys();
}

async function issueKey(ev) {
  ev.preventDefault();
  const user = $("op-user").value;
  const name = $("op-key-name").value.trim();
  const issued = (await api(`/api/admin/users/${enc(user)}/keys`,
    { method: "POST", body: name ? { name } : {} })).data;
  $("op-key-name").value = "";
  // Shown this once: the gateway keeps only its hash. Leaving the view forgets it.
  fill("new-key", el("p", {}, `New key for ${user} — copy it now, it will not be shown again:`),
    el("code", { id: "new-key-value" }, issued.key));
  $("new-key").hidden = false;
  await loadOpKeys();
}

async function setPlan() {
  const user = $("op-user").value;
  await api(`/api/admin/users/${enc(user)}/subscription`, { method: "PUT",
    body: { plan_id: $("op-plan").value } });
  await showOperator();
  $("op-user").value = user;
  syncPlanSelect();
  await loadOpKeys();
}

async function openUser(user) {
  state.user = user;
  state.period = null;
  saveSession();
  $("new-key").hidden = true;
  if (location.hash === "#user") await route();
  else location.hash = "#user";
}

// ---- wiring -------------------------------------------------------------------------------

/** Runs `fn`, showing its failure instead of losing it. */
const guarded = (fn) => async (...args) => {
  try { await fn(...args); } catch (e) {
    if (e instanceof ApiError && e.status === 401) {
      signOut();
      showError("The token or key was not accepted (or has been revoked).");
    } else showError(e.message || String(e));
  }
};

function wire() {
  for (const p of PROVIDERS) {
    $("log-provider").append(el("option", { value: ROUTE_NAMES[p] || p }, providerName(p)));
  }
  $("sign-in-form").addEventListener("submit", guarded(async (ev) => {
    ev.preventDefault();
    await signIn($("token").value.trim());
  }));
  $("sign-out").addEventListener("click", signOut);
  $("nav-operator").addEventListener("click", () => { location.hash = "#operator"; });
  $("nav-user").addEventListener("click", guarded(async () => {
    if (location.hash === "#user") await route();
    else location.hash = "#user";
  }));
  window.addEventListener("hashchange", guarded(async () => { if (state.token) await route(); }));
  $("user-pick").addEventListener("submit", guarded(async (ev) => {
    ev.preventDefault();
    await openUser($("user-id").value.trim());
  }));
  $("period").addEventListener("change", guarded(async () => {
    state.period = $("period").value;
    await loadUser();
  }));
  const reloadLogs = guarded(async () => { state.logOffset = 0; await loadLogs(); });
  $("log-provider").addEventListener("change", reloadLogs);
  $("log-status").addEventListener("change", reloadLogs);
  $("logs-prev").addEventListener("click", guarded(async () => {
    state.logOffset = Math.max(0, state.logOffset - LOG_PAGE);
    await loadLogs();
  }));
  $("logs-next").addEventListener("click", guarded(async () => {
    state.logOffset += LOG_PAGE;
    await loadLogs();
  }));
  $("op-search").addEventListener("input", renderOpUsers);
  $("op-user").addEventListener("change", guarded(async () => {
    $("new-key").hidden = true;
    syncPlanSelect();
    await loadOpKeys();
  }));
  $("op-issue").addEventListener("submit", guarded(issueKey));
  $("op-set-plan").addEventListener("click", guarded(setPlan));
}

document.addEventListener("DOMContentLoaded", guarded(async () => {
  wire();
  const saved = JSON.parse(sessionStorage.getItem(SESSION_KEY) || "null");
  if (saved && saved.token) await signIn(saved.token, saved.user);
}));
