// entitygate console: the only script. Loaded from the binary ('self'); it never builds
// markup from data: every value goes into the page through textContent.
"use strict";
// Approvals page: new requests are announced as they are made (from the decisions feed,
// filtered to `approval_required`), as text with a link to reload the page; the page itself
// is never rebuilt from data.
(function () {
  var status = document.getElementById("approvals-status");
  var live = document.getElementById("approvals-live");
  if (!status || !live) return;
  var params = new URLSearchParams();
  params.set("slug", "approval_required");
  params.set("after", status.getAttribute("data-after") || "0");
  var source = new EventSource("/ui/live/events?" + params.toString());
  var seen = Number(status.getAttribute("data-after") || "0");
  source.onopen = function () { status.textContent = "live"; status.className = "allow"; };
  source.onerror = function () { status.textContent = "reconnecting…"; status.className = "refused"; };
  source.onmessage = function (e) {
    var d;
    try { d = JSON.parse(e.data); } catch (err) { return; }
    if (d.seq <= seen) return;
    seen = d.seq;
    var p = document.createElement("p");
    p.className = "notice approval-new";
    p.textContent = "New: " + (d.subject || "?") + " asked to run " + (d.tool || "?") + " (" + d.time + "). ";
    var a = document.createElement("a");
    a.textContent = "Show it";
    a.href = "/ui/approvals";
    p.appendChild(a);
    live.insertBefore(p, live.firstChild);
  };
  source.addEventListener("ended", function () {
    source.close();
    status.textContent = "ended: sign in again";
    status.className = "refused";
  });
})();
(function () {
  var table = document.getElementById("live-rows");
  if (!table) return;
  var status = document.getElementById("live-status");
  var MAX_ROWS = 500;
  var params = new URLSearchParams(window.location.search);
  params.set("after", table.getAttribute("data-after") || "0");
  var source = new EventSource("/ui/live/events?" + params.toString());

  function cell(row, text, cls) {
    var td = document.createElement("td");
    td.textContent = text == null ? "" : String(text);
    if (cls) td.className = cls;
    row.appendChild(td);
    return td;
  }

  function linkCell(row, text, href, cls) {
    var td = document.createElement("td");
    if (cls) td.className = cls;
    var a = document.createElement("a");
    a.textContent = text == null ? "" : String(text);
    a.href = href;
    td.appendChild(a);
    row.appendChild(td);
  }

  var lastSeq = Number(table.getAttribute("data-after") || "0");

  function add(d) {
    if (d.seq <= lastSeq) return;
    lastSeq = d.seq;
    var tr = document.createElement("tr");
    tr.setAttribute("data-seq", String(d.seq));
    cell(tr, d.time, "mono");
    if (d.subject) {
      linkCell(tr, d.subject, "/ui/user?subject=" + encodeURIComponent(d.subject), "mono");
    } else {
      cell(tr, "-", "muted");
    }
    cell(tr, d.method + " " + (d.path || "(non-canonical path)"), "mono");
    cell(tr, d.tool || "", "mono");
    cell(tr, d.toolkit || "", "mono");
    cell(tr, d.decision, d.decision === "allow" ? "allow" : "refused");
    cell(tr, d.status);
    cell(tr, d.latency_ms);
    linkCell(tr, d.request_id, "/ui/decision?id=" + encodeURIComponent(d.request_id), "mono");
    table.insertBefore(tr, table.firstChild);
    while (table.rows.length > MAX_ROWS) table.deleteRow(table.rows.length - 1);
    var empty = document.getElementById("live-empty");
    if (empty) empty.remove();
  }

  source.onopen = function () { status.textContent = "live"; status.className = "allow"; };
  source.onerror = function () { status.textContent = "reconnecting…"; status.className = "refused"; };
  source.onmessage = function (e) {
    try { add(JSON.parse(e.data)); } catch (err) { /* a malformed event is skipped */ }
  };
  // The session ended (sign-out, expiry, a new admin token): reconnecting would be refused.
  source.addEventListener("ended", function () {
    source.close();
    status.textContent = "ended: sign in again";
    status.className = "refused";
  });
  source.addEventListener("lagged", function (e) {
    status.textContent = "live (skipped " + e.data + " decisions: too fast to show)";
  });
})();
