// Client-side search and filters over the catalogue's cards (their data-* attributes are
// written, escaped, by the template; nothing here builds HTML).
(function () {
  "use strict";
  const form = document.getElementById("filters");
  const list = document.getElementById("plugins");
  const cards = Array.from(document.querySelectorAll("li.plugin"));
  const count = document.getElementById("count");
  const empty = document.getElementById("empty");
  function value(id) { return document.getElementById(id).value; }
  function apply() {
    const words = value("search").toLowerCase().split(/\s+/).filter(Boolean);
    const cap = value("capability");
    const lic = value("license");
    const pub = value("publisher");
    const minQuality = parseFloat(value("min-quality")) || 0;
    const minCalls = parseFloat(value("min-calls")) || 0;
    let shown = 0;
    for (const card of cards) {
      const d = card.dataset;
      const quality = d.quality === "" ? null : parseFloat(d.quality);
      const ok =
        words.every((w) => d.search.includes(w)) &&
        (!cap || d.capabilities.split(" ").includes(cap)) &&
        (!lic || d.license === lic) &&
        (!pub || d.publisher === pub) &&
        (minQuality <= 0 || (quality !== null && quality >= minQuality)) &&
        (minCalls <= 0 || parseFloat(d.calls) >= minCalls);
      card.hidden = !ok;
      if (ok) shown += 1;
    }
    sort();
    count.textContent = String(shown);
    empty.hidden = shown !== 0;
  }
  // Reorders the existing card nodes (no markup is built); ties keep the name order.
  function sort() {
    const by = value("sort");
    const rate = (c) => (c.dataset.errorRate === "" ? Infinity : parseFloat(c.dataset.errorRate));
    const order = cards.slice().sort((a, b) => {
      if (by === "calls") return parseFloat(b.dataset.calls) - parseFloat(a.dataset.calls);
      if (by === "error-rate") return rate(a) - rate(b);
      return 0;
    });
    for (const card of order) list.appendChild(card);
  }
  form.addEventListener("input", apply);
  form.addEventListener("change", apply);
  form.addEventListener("submit", (e) => { e.preventDefault(); apply(); });
  apply();
}());
