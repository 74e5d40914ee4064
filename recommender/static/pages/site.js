// DESOM archive pages: a little progressive enhancement; every page works without it.
(function () {
  "use strict";

  // A download with quality warnings asks first. Without JavaScript the link leads to the
  // confirmation page, which lists the same warnings.
  document.addEventListener("click", function (event) {
    var link = event.target.closest ? event.target.closest("a.js-confirm-download") : null;
    if (!link) { return; }
    event.preventDefault();
    var text = "This exposure carries quality warnings:\n\n" + (link.getAttribute("data-warnings") || "") +
      "\nDownload it anyway?";
    if (window.confirm(text)) {
      window.location.href = link.getAttribute("data-download");
    }
  });

  // The cell-label form: the free-text box only when "other" is chosen.
  function syncOther(select) {
    var other = document.querySelector(".js-other");
    if (other) { other.style.display = select.value === "__other__" ? "" : "none"; }
  }
  document.addEventListener("DOMContentLoaded", function () {
    var select = document.querySelector("#label-form select[name=label]");
    if (select) {
      syncOther(select);
      select.addEventListener("change", function () { syncOther(select); });
    }
  });
})();
