// atomrelay dashboard: refresh snapshot thumbnails and camera states (from /status) while the
// page is visible, show times in the browser's time zone, copy addresses. No framework; the
// page works without it too.
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

  function showState(camera) {
    var card = document.querySelector('article.card[data-camera="' + CSS.escape(camera.id) + '"]');
    if (!card) {
      return;
    }
    var badge = card.querySelector(".badge");
    Array.from(card.classList).forEach(function (name) {
      if (name.indexOf("state-") === 0) {
        card.classList.remove(name);
      }
    });
    card.classList.add("state-" + camera.state);
    badge.className = "badge " + camera.state;
    badge.dataset.state = camera.state;
    badge.textContent = camera.state;
    var since = document.createElement("time");
    since.setAttribute("datetime", camera.since);
    since.textContent = camera.since;
    localTime(since);
    var reason = card.querySelector(".reason");
    reason.textContent = camera.reason + " \u00b7 since ";
    reason.appendChild(since);
  }

  var asking = false;

  function refreshStates() {
    if (asking) {
      return;
    }
    asking = true;
    fetch("/status", {credentials: "same-origin", cache: "no-store"})
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (status) {
        if (status && Array.isArray(status.cameras)) {
          status.cameras.forEach(showState);
        }
      })
      .catch(function () {})
      .then(function () { asking = false; });
  }

  function refreshAll() {
    if (document.visibilityState !== "visible") {
      return;
    }
    document.querySelectorAll("img.snapshot").forEach(refresh);
    refreshStates();
  }

  function localTime(element) {
    var when = new Date(element.getAttribute("datetime"));
    if (!isNaN(when.getTime())) {
      element.title = element.textContent;
      element.textContent = when.toLocaleString();
    }
  }

  function localTimes() {
    document.querySelectorAll("time[datetime]").forEach(localTime);
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
