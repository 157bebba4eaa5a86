// atomrelay dashboard: refresh snapshot thumbnails while the page is visible, show times in
// the browser's time zone, copy addresses. No framework; the page works without it too.
"use strict";

(function () {
  var REFRESH_MS = 5000;

  function refresh(img) {
    if (img.dataset.loading) {
      return;
    }
    var base = img.getAttribute("src").split("?")[0];
    var next = new Image();
    img.dataset.loading = "1";
    next.onload = function () {
      img.src = next.src;
      img.classList.remove("stale");
      delete img.dataset.loading;
    };
    next.onerror = function () {
      img.classList.add("stale");
      delete img.dataset.loading;
    };
    next.src = base + "?t=" + Date.now();
  }

  function refreshAll() {
    if (document.visibilityState !== "visible") {
      return;
    }
    document.querySelectorAll("img.snapshot").forEach(refresh);
  }

  function localTimes() {
    document.querySelectorAll("time[datetime]").forEach(function (element) {
      var when = new Date(element.getAttribute("datetime"));
      if (!isNaN(when.getTime())) {
        element.title = element.textContent;
        element.textContent = when.toLocaleString();
      }
    });
  }

  function copy(button) {
    var input = button.parentNode.querySelector("input");
    input.select();
    var done = function () {
      button.textContent = "Copied";
      setTimeout(function () { button.textContent = "Copy"; }, 1500);
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(input.value).then(done, function () {});
    } else if (document.execCommand("copy")) {
      done();
    }
  }

  document.addEventListener("click", function (event) {
    if (event.target.matches && event.target.matches("button.copy")) {
      copy(event.target);
    }
  });
  document.querySelectorAll("img.snapshot").forEach(function (img) {
    img.addEventListener("error", function () { img.classList.add("stale"); });
  });
  document.addEventListener("visibilitychange", refreshAll);
  localTimes();
  setInterval(refreshAll, REFRESH_MS);
})();
