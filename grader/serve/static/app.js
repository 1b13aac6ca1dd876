// Live status without a reload: poll /api/status and redraw the history table (text only, never HTML).
"use strict";
(function () {
  const body = document.querySelector("#history tbody");
  const attempts = document.getElementById("attempts");
  if (!body) { return; }
  function cell(row, text, cls) {
    const td = document.createElement("td");
    if (cls) { td.className = cls; }
    td.textContent = text;
    row.appendChild(td);
    return td;
  }
  function statusText(s) {
    let text = s.status + (s.late ? " (late)" : "");
    if (s.place) { text += " (place " + s.place + " in the queue)"; }
    else if (s.status === "running") { text += ": " + s.stage_text; }
    if (s.message && (s.status !== "done" || s.result !== "graded")) { text += " — " + s.message; }
    return text;
  }
  function draw(view) {
    attempts.textContent = view.attempts.text + ".";
    const rows = [];
    for (const s of view.submissions) {
      const tr = document.createElement("tr");
      tr.dataset.id = String(s.id);
      tr.dataset.status = s.status;
      cell(tr, String(s.id));
      cell(tr, s.uploaded);
      cell(tr, statusText(s), "status");
      cell(tr, s.score === null ? "" : s.score + " / " + s.max_score, "score");
      const link = cell(tr, "", "report");
      if (s.report) {
        const a = document.createElement("a");
        a.href = s.report;
        a.textContent = "report";
        link.appendChild(a);
      }
      rows.push(tr);
    }
    if (rows.length) { body.replaceChildren(...rows); }
    const notice = document.getElementById("notice");
    if (notice && view.submissions.length && view.submissions[0].status !== "queued") { notice.hidden = true; }
    return view.submissions.some((s) => s.status === "queued" || s.status === "running");
  }
  let delay = 1000;
  async function poll() {
    try {
      const answer = await fetch("/api/status", { credentials: "same-origin", cache: "no-store" });
      if (answer.ok) {
        const busy = draw(await answer.json());
        delay = busy ? 1000 : 5000;
      } else {
        delay = 10000;
      }
    } catch (e) {
      delay = 10000;
    }
    window.setTimeout(poll, delay);
  }
  poll();
})();
