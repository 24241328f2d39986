// The catalog's live search and filters. The page works without it: the filter form is an ordinary GET.
(function () {
  "use strict";
  var form = document.getElementById("filters");
  if (!form) { return; }
  var items = Array.prototype.slice.call(document.querySelectorAll("#feeds > li"));
  var count = document.getElementById("count");
  var none = document.getElementById("none");

  function value(name) { return form.elements.namedItem(name).value; }

  function apply() {
    var words = value("q").trim().toLowerCase().split(/\s+/).filter(Boolean);
    var provider = value("provider"), theme = value("theme"), access = value("access");
    var shown = 0;
    items.forEach(function (li) {
      var d = li.dataset;
      var ok = words.every(function (w) { return d.search.indexOf(w) >= 0; }) &&
        (!provider || d.provider === provider) &&
        (!theme || d.themes.split(" ").indexOf(theme) >= 0) &&
        (!access || d.access === access);
      li.hidden = !ok;
      if (ok) { shown += 1; }
    });
    count.textContent = shown + " of " + items.length + " feeds shown";
    none.hidden = shown > 0;
    var params = new URLSearchParams();
    ["q", "provider", "theme", "access"].forEach(function (k) { if (value(k)) { params.set(k, value(k)); } });
    var query = params.toString();
    history.replaceState(null, "", query ? "?" + query : location.pathname);
  }

  form.addEventListener("input", apply);
  form.addEventListener("change", apply);
})();
