// PrismQ Queue dashboard: confirmations for actions, and the overview's live charts.
(function () {
  "use strict";

  // Every action form asks first; the browser's confirm() is the confirmation step.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) event.preventDefault();
  });

  function chart(element, title, series, data) {
    var width = Math.max(element.clientWidth || 0, 320);
    var options = {
      title: title,
      width: width,
      height: 200,
      scales: {
        x: {
          time: true,
          // One sample yet (the depth chart starts empty): show the last five minutes.
          range: function (u, min, max) { return min === max ? [min - 300, max + 5] : [min, max]; },
        },
      },
      series: [{}].concat(series),
      axes: [{}, { size: 50 }],
    };
    element.textContent = "";
    return new uPlot(options, data, element);
  }

  function startCharts(section) {
    var source = section.getAttribute("data-source");
    var depth = [[], [], []];
    var charts = {};

    function refresh() {
      fetch(source, { credentials: "same-origin" })
        .then(function (response) {
          if (!response.ok) throw new Error("HTTP " + response.status);
          return response.json();
        })
        .then(function (data) {
          depth[0].push(data.now);
          depth[1].push(data.depth.queued);
          depth[2].push(data.depth.leased);
          if (depth[0].length > 720) depth.forEach(function (s) { s.shift(); });
          var throughput = [data.times, data.completed];
          var failures = [data.times, data.failed, data.cancelled];
          if (!charts.throughput) {
            charts.throughput = chart(document.getElementById("chart-throughput"), "", [
              { label: "completed", stroke: "#2e7d32", fill: "rgba(46,125,50,0.1)" },
            ], throughput);
            charts.failures = chart(document.getElementById("chart-failures"), "", [
              { label: "dead", stroke: "#c62828" },
              { label: "cancelled", stroke: "#757575" },
            ], failures);
            charts.depth = chart(document.getElementById("chart-depth"), "", [
              { label: "queued", stroke: "#1565c0" },
              { label: "running", stroke: "#ef6c00" },
            ], depth);
          } else {
            charts.throughput.setData(throughput);
            charts.failures.setData(failures);
            charts.depth.setData(depth);
          }
          section.setAttribute("data-loaded", "true");
        })
        .catch(function (error) {
          section.setAttribute("data-error", String(error));
        });
    }

    refresh();
    window.setInterval(refresh, 5000);
  }

  document.addEventListener("DOMContentLoaded", function () {
    var section = document.querySelector("section.charts");
    if (section && window.uPlot) startCharts(section);
  });
})();
