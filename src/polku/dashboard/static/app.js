// polku dashboard: progressive behaviour on top of server-rendered pages.
//  - [data-fragment="/ui/fragments/…"]: a slow section, fetched after the page shows
//  - [data-poll="/ui/api/…"]: live numbers, refreshed every data-interval ms
//  - [data-chart="spec-id"]: a Plotly chart drawn from a JSON spec in the page
// Every page works without it: fragments have a plain link, charts a table.
(function () {
  "use strict";

  var plotlyLoading = null;
  function loadPlotly() {
    if (window.Plotly) return Promise.resolve(window.Plotly);
    if (plotlyLoading) return plotlyLoading;
    var script = document.querySelector("script[data-plotly]");
    var src = script ? script.getAttribute("data-plotly") : "/ui/static/plotly.min.js";
    plotlyLoading = new Promise(function (resolve, reject) {
      var tag = document.createElement("script");
      tag.src = src;
      tag.onload = function () { resolve(window.Plotly); };
      tag.onerror = function () { reject(new Error("the chart library did not load")); };
      document.head.appendChild(tag);
    });
    return plotlyLoading;
  }

  var FONT = { family: "system-ui, -apple-system, Segoe UI, Roboto, Arial, sans-serif", size: 13, color: "#1b1f24" };

  function drawChart(area) {
    var specNode = document.getElementById(area.getAttribute("data-chart"));
    if (!specNode || area.getAttribute("data-drawn")) return;
    var spec;
    try { spec = JSON.parse(specNode.textContent); } catch (error) { return; }
    area.setAttribute("data-drawn", "1");
    loadPlotly().then(function (Plotly) {
      area.textContent = "";
      var layout = Object.assign({
        font: FONT, margin: { l: 48, r: 16, t: 32, b: 40 }, paper_bgcolor: "rgba(0,0,0,0)",
        plot_bgcolor: "rgba(0,0,0,0)", legend: { orientation: "h", x: 0, y: 1.02, yanchor: "bottom" },
        hoverlabel: { font: FONT }
      }, spec.layout || {});
      return Plotly.newPlot(area, spec.data || [], layout, {
        displaylogo: false, responsive: true, modeBarButtonsToRemove: ["lasso2d", "select2d"]
      }).then(function () {
        // Plotly's SVG is a picture of the data beside it; the figure has the label.
        area.querySelectorAll("svg").forEach(function (svg) { svg.setAttribute("aria-hidden", "true"); });
        if (spec.follow) {
          area.on("plotly_click", function (event) {
            var point = event && event.points && event.points[0];
            if (!point) return;
            // A point's string customdata is the value to follow; an empty one (the
            // Sankey's "(end)" nodes) is not a step and is not followed.
            var label = typeof point.customdata === "string" ? point.customdata
              : (point.label !== undefined ? point.label : point.x);
            if (label === undefined || label === null || label === "") return;
            window.location.href = spec.follow.replace("{value}", encodeURIComponent(String(label)));
          });
        }
        area.dispatchEvent(new CustomEvent("polku:chart", { bubbles: true }));
      });
    }).catch(function (error) {
      area.textContent = "";
      var note = document.createElement("p");
      note.className = "chart-error";
      note.textContent = "The chart could not be drawn (" + error.message + "); the table shows the same numbers.";
      area.appendChild(note);
    });
  }

  function drawCharts(root) {
    root.querySelectorAll("[data-chart]").forEach(drawChart);
  }

  function loadFragment(section) {
    var url = section.getAttribute("data-fragment");
    fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } }).then(function (response) {
      if (response.status === 401) { window.location.href = "/ui/login?next=" + encodeURIComponent(location.pathname + location.search); return null; }
      return response.text().then(function (text) { return { ok: response.ok, text: text }; });
    }).then(function (result) {
      if (!result) return;
      section.innerHTML = result.text;
      section.removeAttribute("aria-busy");
      drawCharts(section);
      enhance(section);
    }).catch(function () {
      section.removeAttribute("aria-busy");
      section.innerHTML = '<p class="flash error" role="alert">This part of the page did not load. Check that polku is running and reload the page.</p>';
    });
  }

  function setLive(root, values) {
    Object.keys(values).forEach(function (key) {
      root.querySelectorAll('[data-live="' + key + '"]').forEach(function (node) {
        var text = String(values[key]);
        if (node.textContent !== text) node.textContent = text;
      });
    });
  }

  function poll(section) {
    var url = section.getAttribute("data-poll");
    var interval = parseInt(section.getAttribute("data-interval") || "2000", 10);
    var dot = document.querySelector(".live-dot");
    var stamp = document.querySelector("[data-live-stamp]");
    function tick() {
      if (document.hidden) { setTimeout(tick, interval); return; }
      fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } }).then(function (response) {
        if (response.status === 401) { window.location.href = "/ui/login?next=" + encodeURIComponent(location.pathname); return null; }
        if (!response.ok) throw new Error(String(response.status));
        return response.json();
      }).then(function (data) {
        if (!data) return;
        setLive(document, data.display || {});
        if (dot) dot.classList.remove("stale");
        if (stamp) stamp.textContent = new Date().toLocaleTimeString();
        section.dispatchEvent(new CustomEvent("polku:live", { detail: data, bubbles: true }));
      }).catch(function () {
        if (dot) dot.classList.add("stale");
      }).then(function () { setTimeout(tick, interval); });
    }
    setTimeout(tick, interval);
  }

  // Live charts: a chart whose spec names "live" gets its traces replaced by the
  // poller's data[live] ({x: [...], y: {...trace name: [...]}}).
  function liveCharts() {
    document.addEventListener("polku:live", function (event) {
      document.querySelectorAll("[data-chart][data-live-chart]").forEach(function (area) {
        var key = area.getAttribute("data-live-chart");
        var series = event.detail && event.detail[key];
        if (!series || !window.Plotly || !area.getAttribute("data-drawn") || !area.data) return;
        var traces = Object.keys(series.y).map(function (name) {
          return { type: "bar", name: name, x: series.x, y: series.y[name] };
        });
        var layout = Object.assign({}, area.layout);
        layout.xaxis = Object.assign({}, layout.xaxis, { range: [series.x[0], series.x[series.x.length - 1]] });
        window.Plotly.react(area, traces, layout);
      });
    });
  }

  // Confirmations for destructive forms: data-confirm="Revoke this key?"
  function confirmations(root) {
    root.querySelectorAll("form[data-confirm]").forEach(function (form) {
      if (form.getAttribute("data-confirm-bound")) return;
      form.setAttribute("data-confirm-bound", "1");
      form.addEventListener("submit", function (event) {
        if (!window.confirm(form.getAttribute("data-confirm"))) event.preventDefault();
      });
    });
  }

  // Forms with data-autosubmit submit when a select changes (the button stays for keyboards).
  function autosubmit(root) {
    root.querySelectorAll("form[data-autosubmit] select").forEach(function (select) {
      select.addEventListener("change", function () { select.form.requestSubmit(); });
    });
  }

  // A table wider than its card scrolls inside it; keyboards must reach it too, so
  // the scrolling box becomes a focusable, labelled region (WCAG 2.1.1).
  function scrollableTables(root) {
    root.querySelectorAll(".table-wrap").forEach(function (wrap) {
      if (wrap.scrollWidth <= wrap.clientWidth + 1 || wrap.hasAttribute("tabindex")) return;
      var table = wrap.querySelector("table");
      var caption = table && table.querySelector("caption");
      var card = wrap.closest("section, article, .card");
      var heading = card && card.querySelector("h2, h3");
      var label = (caption && caption.textContent) || (heading && heading.textContent) || "Table";
      wrap.setAttribute("tabindex", "0");
      wrap.setAttribute("role", "region");
      wrap.setAttribute("aria-label", label.trim() + " (scrolls sideways)");
    });
  }

  // Copy buttons (hidden without JavaScript): data-copy="id of the input".
  function copyButtons(root) {
    root.querySelectorAll("button[data-copy]").forEach(function (button) {
      var input = document.getElementById(button.getAttribute("data-copy"));
      var done = button.parentNode.querySelector("[data-copy-done]");
      if (!input) return;
      button.hidden = false;
      button.addEventListener("click", function () {
        input.select();
        var copied = navigator.clipboard && window.isSecureContext
          ? navigator.clipboard.writeText(input.value)
          : Promise.reject(new Error("no clipboard"));
        copied.then(function () {
          if (done) done.textContent = "Copied.";
        }).catch(function () {
          if (done) done.textContent = "Selected: press Ctrl+C (⌘C on a Mac) to copy.";
        });
      });
    });
  }

  function enhance(root) {
    copyButtons(root);
    confirmations(root);
    autosubmit(root);
    scrollableTables(root);
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-fragment]").forEach(loadFragment);
    document.querySelectorAll("[data-poll]").forEach(poll);
    drawCharts(document);
    liveCharts();
    enhance(document);
    window.addEventListener("resize", function () { scrollableTables(document); });
  });
})();
