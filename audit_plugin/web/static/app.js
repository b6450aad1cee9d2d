// audit-plugin web view: the only script besides the vendored htmx and Mermaid.
// No inline script anywhere: the Content-Security-Policy allows scripts from /static only.
(function () {
  "use strict";

  // Draw each conversation's sequence diagram from its Mermaid source (a hidden <pre>).
  // securityLevel "strict": Mermaid sanitises labels and disables click handlers in the source;
  // the labels are entity-encoded by the server, so store text shows as text.
  async function drawDiagrams() {
    var sources = document.querySelectorAll("pre.mermaid-source");
    if (!sources.length) return;
    if (!window.mermaid) {
      sources.forEach(function (source) {
        var target = document.getElementById(source.dataset.target);
        if (target) target.textContent = "The diagram needs Mermaid, which did not load.";
      });
      return;
    }
    window.mermaid.initialize({
      startOnLoad: false,
      securityLevel: "strict",
      theme: "neutral",
      fontFamily: "system-ui, -apple-system, Segoe UI, Roboto, sans-serif",
      sequence: { showSequenceNumbers: true, wrap: false, mirrorActors: true, messageFontSize: 13, actorFontSize: 14 }
    });
    for (var i = 0; i < sources.length; i++) {
      var source = sources[i];
      var target = document.getElementById(source.dataset.target);
      if (!target) continue;
      try {
        var result = await window.mermaid.render("diagram-svg-" + i, source.textContent);
        target.innerHTML = result.svg;
        linkLabels(target, JSON.parse(source.dataset.links || "[]"));
        target.dataset.rendered = "true";
      } catch (error) {
        target.textContent = "The diagram could not be drawn: " + (error && error.message ? error.message : error);
        target.dataset.rendered = "error";
      }
    }
  }

  // Each arrow's label opens its message (labels come in message order).
  function linkLabels(container, links) {
    var labels = container.querySelectorAll("text.messageText");
    labels.forEach(function (label, index) {
      var href = links[index];
      if (!href) return;
      label.classList.add("linked");
      label.addEventListener("click", function () { window.location.href = href; });
    });
  }

  // Live page: rows arrive as server-rendered (escaped) HTML over server-sent events.
  function followLive() {
    var rows = document.getElementById("live-rows");
    if (!rows) return;
    var status = document.getElementById("live-status");
    var source = new EventSource(rows.dataset.source);
    source.addEventListener("open", function () {
      status.textContent = "live";
      status.className = "live-status on";
    });
    source.addEventListener("error", function () {
      status.textContent = "reconnecting…";
      status.className = "live-status off";
    });
    source.addEventListener("record", function (event) {
      var item = JSON.parse(event.data);
      var template = document.createElement("template");
      template.innerHTML = item.html.trim();
      var row = template.content.firstElementChild;
      if (!row) return;
      var existing = null;
      for (var i = 0; i < rows.rows.length; i++) {
        if (rows.rows[i].dataset.id === item.id) { existing = rows.rows[i]; break; }
      }
      if (existing && existing.dataset.status === row.dataset.status) return;  // already shown as it is
      if (existing) existing.replaceWith(row); else rows.prepend(row);
      while (rows.rows.length > 500) rows.deleteRow(-1);
    });
    window.addEventListener("pagehide", function () { source.close(); });
  }

  function start() {
    drawDiagrams();
    followLive();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
