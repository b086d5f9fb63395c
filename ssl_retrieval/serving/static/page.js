// The page at / (ssl_retrieval/serving/page.py): plain JS, no build step, no external assets.
// Everything shown comes from /page/* on this server; text goes in with textContent only.
"use strict";

const $ = (id) => document.getElementById(id);
const MAX_SHOWN_VALUES = 12;
const state = { info: null, lastItem: null, activeOption: -1, completionTimer: null, seq: 0 };

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) {
      node.append(typeof child === "string" ? document.createTextNode(child) : child);
    }
  }
  return node;
}

async function api(url, options) {
  let response;
  try {
    response = await fetch(url, options);
  } catch (e) {
    return { ok: false, status: 0, error: `the server did not answer (${e.message})` };
  }
  let body = null;
  try {
    body = await response.json();
  } catch (e) {
    body = null;
  }
  if (!response.ok) {
    const error = body && body.error ? body.error : `HTTP ${response.status}`;
    return { ok: false, status: response.status, error };
  }
  return { ok: true, status: response.status, body };
}

// ---- What is served -------------------------------------------------------------------------

function formatBytes(n) {
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)} MB`;
  return `${(n / 1e3).toFixed(1)} kB`;
}

function plural(n, word) {
  return `${Number(n).toLocaleString("en")} ${word}${n === 1 ? "" : "s"}`;
}

function describeModel(label, s) {
  const p = s.index_params || {};
  const recall = s.recall_at_10_vs_brute_force;
  const parts = [
    s.method || "?",
    `${Number(s.num_items).toLocaleString("en")} items`,
    s.index === "scann"
      ? `ScaNN: ${p.num_leaves_to_search} of ${p.num_leaves} leaves searched, ${p.reorder} re-scored`
      : "brute force (exact)",
    `Recall@10 vs brute force ${typeof recall === "number" ? recall.toFixed(3) : "?"} (${s.recall_sample} items)`,
    `exported ${String(s.created).replace("T", " ").slice(0, 16)} UTC`,
    s.catalog
      ? `item catalogue ${formatBytes(s.catalog.bytes)} in memory`
      : s.catalog_error
        ? `item catalogue not used (${s.catalog_error}): ids and scores only`
        : "no item catalogue in this export (re-export to see features and popularity)",
  ];
  const line = el("p", { "data-model": label }, el("strong", { text: `${label}: version ${s.version}` }));
  for (const part of parts) line.append(" · ", el("span", { class: "part", text: part }));
  return line;
}

function renderServed(info) {
  const box = $("served");
  box.replaceChildren(describeModel("served", info.served));
  if (info.compare) box.append(describeModel("compare", info.compare));
}

// ---- Completion (ARIA combobox) ---------------------------------------------------------------

function options() {
  return Array.from($("completions").querySelectorAll("li[role=option]"));
}

function closeCompletions() {
  $("completions").hidden = true;
  $("item").setAttribute("aria-expanded", "false");
  $("item").removeAttribute("aria-activedescendant");
  state.activeOption = -1;
}

function setActive(index) {
  const opts = options();
  if (!opts.length) return;
  state.activeOption = (index + opts.length) % opts.length;
  opts.forEach((o, i) => o.setAttribute("aria-selected", String(i === state.activeOption)));
  const active = opts[state.activeOption];
  $("item").setAttribute("aria-activedescendant", active.id);
  active.scrollIntoView({ block: "nearest" });
}

async function complete() {
  const prefix = $("item").value;
  if (!prefix) return closeCompletions();
  const seq = ++state.seq;
  const r = await api(`/page/items?limit=10&prefix=${encodeURIComponent(prefix)}`);
  if (seq !== state.seq) return; // a newer keystroke owns the list
  const list = $("completions");
  if (!r.ok) {
    list.replaceChildren(el("li", { class: "none", text: r.error }));
  } else if (!r.body.items.length) {
    const why = r.body.catalog ? "no item starts with this" : "no item catalogue: type a full id";
    list.replaceChildren(el("li", { class: "none", text: why }));
  } else {
    list.replaceChildren(
      ...r.body.items.map((id, i) =>
        el("li", { role: "option", id: `opt-${i}`, "data-id": id, "aria-selected": "false", text: id }),
      ),
    );
  }
  list.hidden = false;
  $("item").setAttribute("aria-expanded", "true");
  state.activeOption = -1;
}

function pickOption(li) {
  closeCompletions();
  showItem(li.dataset.id, currentK(), true);
}

// ---- Results ----------------------------------------------------------------------------------

function currentK() {
  return $("k").value.trim() || "10";
}

function compareOn() {
  return Boolean(state.info && state.info.compare && $("compare").checked);
}

// The page's own URL holds the query unless the id would make it longer than this: the server
// refuses request heads over 16 KiB, so such a URL could not be reloaded. The id then lives in
// the history entry's state only (Back and Forward still work).
const MAX_URL_CHARS = 8000;

function urlFor(id, k) {
  const params = new URLSearchParams({ item: id, k: String(k) });
  if (compareOn()) params.set("compare", "1");
  const url = `/?${params}`;
  if (url.length <= MAX_URL_CHARS) return url;
  params.delete("item");
  return `/?${params}`;
}

function valuesOf(value) {
  if (value === undefined || value === null) return [];
  return Array.isArray(value) ? value : [value];
}

function renderFeatures(features, queryFeatures) {
  const box = el("div", { class: "features" });
  for (const f of state.info.served.features) {
    if (f.kind === "id") continue;
    const values = valuesOf(features ? features[f.name] : undefined);
    if (!values.length) continue;
    const shared = new Set(valuesOf(queryFeatures ? queryFeatures[f.name] : undefined).map(String));
    const span = el("span", { class: "feature", "data-feature": f.name }, el("span", { class: "name", text: `${f.name}: ` }));
    values.slice(0, MAX_SHOWN_VALUES).forEach((v) => {
      const text = typeof v === "number" ? Number(v.toPrecision(4)).toLocaleString("en") : String(v);
      span.append(shared.has(String(v)) ? el("mark", { text }) : el("span", { class: "value", text }), " ");
    });
    if (values.length > MAX_SHOWN_VALUES) span.append(`+${values.length - MAX_SHOWN_VALUES} more `);
    box.append(span, " ");
  }
  return box;
}

function popularity(entry) {
  if (!entry.popularity) return el("span", { class: "count", text: "?" });
  return el(
    "span",
    {},
    el("span", { class: `pop ${entry.popularity}`, text: entry.popularity }),
    " ",
    el("span", { class: "count", text: plural(entry.train_pairs, "pair") }),
  );
}

function renderColumn(label, result, other, queryFeatures) {
  const column = el("section", { class: "column", "data-model": label });
  if (!result.ok) {
    column.append(el("h2", { text: label }), el("p", { class: "error", role: "alert", text: result.error }));
    return column;
  }
  const body = result.body;
  const otherRank = other && other.ok ? new Map(other.body.neighbors.map((n) => [n.id, n.rank])) : null;
  const counts = { head: 0, tail: 0, cold: 0 };
  body.neighbors.forEach((n) => {
    if (n.popularity in counts) counts[n.popularity] += 1;
  });
  let summary = `head ${counts.head} · tail ${counts.tail} · cold ${counts.cold}`;
  if (otherRank) {
    const both = body.neighbors.filter((n) => otherRank.has(n.id)).length;
    summary += ` · ${both} of ${body.neighbors.length} in both lists (◆ rank in the other)`;
  }
  const tbody = el("tbody");
  for (const n of body.neighbors) {
    const link = el("a", { href: urlFor(n.id, currentK()), class: "item-link", "data-id": n.id, text: n.id });
    const inOther = otherRank && otherRank.has(n.id);
    const marker = inOther
      ? el("span", { class: "other-rank", title: "rank in the other list", text: ` ◆${otherRank.get(n.id)}` })
      : null;
    const row = el(
      "tr",
      { "data-id": n.id, "data-score": String(n.score), "data-rank": String(n.rank) },
      el("td", { class: "num", text: String(n.rank) }),
      el("td", { class: "id" }, link, marker),
      el("td", { class: "num", text: n.score.toFixed(2) }),
      el("td", { class: "source", title: "the ranking that listed this item, and its own score" },
        n.source ? `${n.source} ${n.source_score.toFixed(3)}` : n.source_score.toFixed(3)),
      el("td", {}, popularity(n)),
      el("td", {}, renderFeatures(n.features, queryFeatures)),
    );
    if (inOther) row.classList.add("both");
    tbody.append(row);
  }
  const head = el(
    "tr",
    {},
    ...["rank", "item", "score", "from", "popularity", "features"].map((h) =>
      el("th", { scope: "col", text: h }),
    ),
  );
  column.append(
    el("h2", {}, `${label} `, el("small", { text: `version ${body.version}` })),
    el("p", { class: "summary", text: summary }),
    el("table", {}, el("thead", {}, head), tbody),
  );
  return column;
}

function renderQuery(title, item) {
  $("query").hidden = false;
  $("query-title").textContent = title;
  const body = $("query-body");
  body.replaceChildren();
  if (item && item.popularity) body.append(el("p", {}, "Training popularity: ", popularity(item)));
  if (item && item.features) body.append(renderFeatures(item.features, null));
  else body.append(el("p", { class: "hint", text: "No catalogue entry for this item." }));
}

function renderResults(served, compare, queryFeatures) {
  const columns = el("div", { class: "columns" }, renderColumn("served", served, compare, queryFeatures));
  if (compare) columns.append(renderColumn("compare", compare, served, queryFeatures));
  $("results").replaceChildren(columns);
}

async function showItem(id, k, push, focus = false) {
  $("item").value = id;
  $("k").value = k;
  closeCompletions();
  if (push) history.pushState({ item: id }, "", urlFor(id, k));
  document.title = `${id}: similar items`;
  // The id goes in a body, not the path: a browser rewrites the paths "." and "..", and a URL
  // over 16 KiB is refused, so any id reaches the server as it is.
  const similar = (model) =>
    api("/page/similar", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ item_id: id, k, model }),
    });
  const [served, compare] = await Promise.all([
    similar("served"),
    compareOn() ? similar("compare") : Promise.resolve(null),
  ]);
  if (!served.ok) {
    $("error").textContent = served.error;
    $("query").hidden = true;
    $("results").replaceChildren();
    state.lastItem = null;
    $("fill-from-query").disabled = true;
    return;
  }
  $("error").textContent = "";
  state.lastItem = { id, ...(served.body.item || {}) };
  $("fill-from-query").disabled = !served.body.item;
  renderQuery(id, served.body.item);
  renderResults(served, compare, served.body.item ? served.body.item.features : null);
  if (focus) $("query-title").focus();
}

// ---- New item ---------------------------------------------------------------------------------

function buildFeatureForm(features) {
  const box = $("feature-fields");
  box.replaceChildren();
  for (const f of features) {
    const id = `f-${f.name}`;
    const hint = {
      id: "text (a new id is out of vocabulary)",
      categorical: "one value",
      multi_hot: "values separated by spaces or commas",
      dense: "a number",
    }[f.kind];
    const input = el("input", { id, name: f.name, "data-kind": f.kind, type: f.kind === "dense" ? "number" : "text" });
    if (f.kind === "dense") input.setAttribute("step", "any");
    box.append(el("label", { for: id }, `${f.name} `, el("span", { class: "kind", text: `(${f.kind}: ${hint})` })), input);
  }
}

function featureRecord() {
  const record = {};
  for (const input of $("feature-fields").querySelectorAll("input")) {
    const value = input.value.trim();
    if (!value) continue;
    const kind = input.dataset.kind;
    if (kind === "multi_hot") record[input.name] = value.split(/[\s,]+/).filter(Boolean);
    else if (kind === "dense") record[input.name] = Number(value);
    else record[input.name] = value;
  }
  return record;
}

function fillFromQuery() {
  const item = state.lastItem;
  if (!item) return;
  for (const input of $("feature-fields").querySelectorAll("input")) {
    const kind = input.dataset.kind;
    const value = kind === "id" ? "" : (item.features || {})[input.name];
    input.value = valuesOf(value).join(" ");
  }
  $("feature-fields").querySelector("input").focus();
}

async function submitFeatures(event) {
  event.preventDefault();
  const record = featureRecord();
  const k = Number(currentK());
  const post = (model) =>
    api("/page/similar_by_features", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ features: record, k: Number.isInteger(k) ? k : currentK(), model }),
    });
  const [served, compare] = await Promise.all([post("served"), compareOn() ? post("compare") : Promise.resolve(null)]);
  if (!served.ok) {
    $("error").textContent = served.error;
    return;
  }
  $("error").textContent = "";
  renderQuery("A new item", { features: record });
  renderResults(served, compare, record);
  $("query-title").focus();
}

// ---- Wiring -----------------------------------------------------------------------------------

function fromUrl(push) {
  const params = new URLSearchParams(location.search);
  if (params.has("k")) $("k").value = params.get("k");
  if (state.info.compare) $("compare").checked = params.get("compare") === "1";
  const item = (history.state && history.state.item) || params.get("item");
  if (item) {
    showItem(item, currentK(), push);
  } else {
    // Back to the bare page: nothing asked, nothing shown.
    $("item").value = "";
    $("error").textContent = "";
    $("query").hidden = true;
    $("results").replaceChildren();
    state.lastItem = null;
    $("fill-from-query").disabled = true;
  }
}

async function init() {
  const r = await api("/page/info");
  if (!r.ok) {
    $("served").textContent = `Could not read what is served: ${r.error}`;
    return;
  }
  state.info = r.body;
  renderServed(state.info);
  $("k").max = String(state.info.served.max_k);
  if (state.info.compare) $("compare-toggle").hidden = false;
  buildFeatureForm(state.info.served.features);

  const input = $("item");
  input.addEventListener("input", () => {
    clearTimeout(state.completionTimer);
    state.completionTimer = setTimeout(complete, 120);
  });
  input.addEventListener("keydown", (e) => {
    const open = !$("completions").hidden && options().length > 0;
    if (e.key === "ArrowDown") {
      e.preventDefault();
      if ($("completions").hidden) complete().then(() => setActive(0));
      else setActive(state.activeOption + 1);
    } else if (e.key === "ArrowUp" && open) {
      e.preventDefault();
      setActive(state.activeOption - 1);
    } else if (e.key === "Enter" && open && state.activeOption >= 0) {
      e.preventDefault();
      pickOption(options()[state.activeOption]);
    } else if (e.key === "Escape") {
      closeCompletions();
    }
  });
  input.addEventListener("blur", () => setTimeout(closeCompletions, 150));
  $("completions").addEventListener("mousedown", (e) => {
    const li = e.target.closest("li[role=option]");
    if (li) {
      e.preventDefault();
      pickOption(li);
    }
  });
  $("search").addEventListener("submit", (e) => {
    e.preventDefault();
    const id = input.value.trim();
    if (!id) {
      $("error").textContent = "type an item id (or the start of one and pick it with ↓ and Enter)";
      return;
    }
    showItem(id, currentK(), true);
  });
  $("compare").addEventListener("change", () => {
    if (state.lastItem) showItem(state.lastItem.id, currentK(), true);
  });
  $("results").addEventListener("click", (e) => {
    const link = e.target.closest("a.item-link");
    if (!link || e.ctrlKey || e.metaKey || e.shiftKey || e.altKey || e.button !== 0) return;
    e.preventDefault();
    showItem(link.dataset.id, currentK(), true, true);
  });
  $("features-form").addEventListener("submit", submitFeatures);
  $("fill-from-query").addEventListener("click", fillFromQuery);
  window.addEventListener("popstate", () => fromUrl(false));
  fromUrl(false);
}

document.addEventListener("DOMContentLoaded", init);
