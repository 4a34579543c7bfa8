// The usage dashboard: reads /api/v1/admin/metrics with the admin key kept in sessionStorage.
// Text is always set through textContent, never as HTML.
"use strict";

(function () {
  const KEY = "gatewayAdminKey";
  const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563"];
  const state = { charts: {}, loaded: false, error: null, data: null };
  window.gatewayDashboard = state;

  const $ = (id) => document.getElementById(id);

  function setStatus(text, isError) {
    $("status").textContent = text;
    $("status").className = isError ? "error" : "";
  }

  function chart(id, config) {
    if (state.charts[id]) {
      state.charts[id].destroy();
    }
    config.options = Object.assign({ animation: false, responsive: true, maintainAspectRatio: false }, config.options);
    state.charts[id] = new window.Chart($(id), config);
  }

  function lineChart(id, labels, series, field) {
    chart(id, {
      type: "line",
      data: {
        labels: labels,
        datasets: series.map((s, i) => ({
          label: s.name, data: s[field], borderColor: COLORS[i % COLORS.length],
          backgroundColor: COLORS[i % COLORS.length], spanGaps: true, tension: 0.2,
        })),
      },
    });
  }

  function row(table, cells) {
    const tr = document.createElement("tr");
    for (const value of cells) {
      const td = document.createElement("td");
      td.textContent = value === null || value === undefined ? "–" : String(value);
      tr.appendChild(td);
    }
    $(table).querySelector("tbody").appendChild(tr);
  }

  function clearTable(table) {
    $(table).querySelector("tbody").replaceChildren();
  }

  // The answer checks to show: those the plugins declare, and any that ran on a shown record.
  function checkNames(data) {
    const names = new Set(data.answer_checks);
    for (const m of data.by_provider_model) {
      Object.keys(m.checks).forEach((name) => names.add(name));
    }
    return [...names].sort();
  }

  // One column per answer check at the end of the provider/model table's header.
  function checkColumns(names) {
    const header = $("table-models").querySelector("thead tr");
    header.querySelectorAll("th[data-check]").forEach((th) => th.remove());
    for (const name of names) {
      const th = document.createElement("th");
      th.dataset.check = name;
      th.textContent = name + " flagged";
      header.appendChild(th);
    }
  }

  // "flagged / checked (rate%)", or null (drawn as a dash) where the check never ran.
  function checkCell(figures) {
    return figures ? figures.flagged + " / " + figures.checked + " (" + (figures.rate * 100).toFixed(1) + "%)" : null;
  }

  function render(data) {
    const totals = data.totals;
    const cards = [
      ["requests", totals.requests], ["errors", totals.errors], ["tokens", totals.tokens],
      ["cost (USD)", totals.cost.toFixed(6)], ["saved by cache (USD)", totals.saved_cost.toFixed(6)],
      ["p50 ms", totals.latency_ms.p50], ["p95 ms", totals.latency_ms.p95], ["p99 ms", totals.latency_ms.p99],
    ];
    $("totals").replaceChildren(...cards.map(([name, value]) => {
      const card = document.createElement("div");
      const strong = document.createElement("strong");
      strong.textContent = value === null ? "–" : String(value);
      const label = document.createElement("span");
      label.textContent = name;
      card.append(strong, label);
      return card;
    }));

    const labels = data.timeseries.buckets.map((b) => b.slice(5, 16).replace("T", " "));
    const series = data.timeseries.series;
    lineChart("chart-requests", labels, series, "requests");
    lineChart("chart-latency", labels, series, "latency_p95");
    lineChart("chart-tokens", labels, series, "tokens");
    lineChart("chart-cost", labels, series, "cost");

    const models = data.by_provider_model;
    chart("chart-percentiles", {
      type: "bar",
      data: {
        labels: models.map((m) => m.provider + "/" + m.model),
        datasets: ["p50", "p95", "p99"].map((p, i) => ({
          label: p, data: models.map((m) => m.latency_ms[p]), backgroundColor: COLORS[i],
        })),
      },
    });
    chart("chart-users", {
      type: "bar",
      data: {
        labels: data.top_users.map((u) => u.user),
        datasets: [{ label: "cost (USD)", data: data.top_users.map((u) => u.cost), backgroundColor: COLORS[0] }],
      },
      options: { indexAxis: "y" },
    });

    clearTable("table-models");
    const checks = checkNames(data);
    checkColumns(checks);
    for (const m of models) {
      const errors = Object.entries(m.errors_by_type).map(([code, n]) => code + " " + n).join(", ");
      row("table-models", [m.provider, m.model, m.requests, m.errors + (errors ? " (" + errors + ")" : ""),
        m.latency_ms.p50, m.latency_ms.p95, m.latency_ms.p99, m.tokens, m.cost.toFixed(6),
        (m.cache_hit_rate * 100).toFixed(1) + "%", m.rate_limited, ...checks.map((name) => checkCell(m.checks[name]))]);
    }
    clearTable("table-errors");
    for (const e of data.recent_errors) {
      row("table-errors", [e.timestamp, e.user, e.provider, e.model, e.status, e.error_code, e.request_id]);
    }
  }

  async function load() {
    const key = sessionStorage.getItem(KEY);
    if (!key) {
      setStatus("Enter an admin key. It stays in this tab (sessionStorage) only.", false);
      return;
    }
    const seconds = Number($("window").value);
    const to = Date.now() / 1000;
    const url = "/api/v1/admin/metrics?from=" + (to - seconds).toFixed(0) + "&to=" + to.toFixed(0);
    setStatus("Loading…", false);
    try {
      const response = await fetch(url, { headers: { "X-API-Key": key }, cache: "no-store" });
      const body = await response.json();
      if (!response.ok) {
        state.error = body.error ? body.error.message : "HTTP " + response.status;
        setStatus(state.error, true);
        return;
      }
      state.data = body;
      render(body);
      state.error = null;
      state.loaded = true;
      setStatus("Showing " + body.from + " to " + body.to + ".", false);
    } catch (err) {
      state.error = String(err);
      setStatus("Could not load metrics: " + err, true);
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("key-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const typed = $("admin-key").value.trim();
      if (typed) {
        sessionStorage.setItem(KEY, typed);
        $("admin-key").value = "";
      }
      load();
    });
    $("forget").addEventListener("click", () => {
      sessionStorage.removeItem(KEY);
      state.loaded = false;
      setStatus("Key forgotten.", false);
    });
    $("window").addEventListener("change", load);
    load();
  });
})();
