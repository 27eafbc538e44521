// Ahead: small, progressive enhancements. Every page works without this file.
(function () {
  "use strict";

  document.documentElement.classList.add("js");

  function ready(fn) {
    if (document.readyState !== "loading") fn();
    else document.addEventListener("DOMContentLoaded", fn);
  }

  // (a) The board's filter form submits as soon as a select changes; Apply stays for no-JS.
  document.addEventListener("change", function (event) {
    var select = event.target;
    if (!(select instanceof HTMLSelectElement)) return;
    var form = select.closest("form.filters");
    if (!form) return;
    if (typeof form.requestSubmit === "function") form.requestSubmit();
    else form.submit();
  });

  // Leave empty filters out of the URL so a shared view reads ?tag=api, not ?product=&tag=api&stage=.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!(form instanceof HTMLFormElement) || !form.classList.contains("filters") || form.method !== "get") return;
    Array.prototype.forEach.call(form.elements, function (field) {
      if (field.name && field.value === "" && !field.disabled) {
        field.disabled = true;
        field.setAttribute("data-emptied", "");
      }
    });
  });
  // Coming back with the Back button restores the page from cache: give the fields back.
  window.addEventListener("pageshow", function () {
    Array.prototype.forEach.call(document.querySelectorAll("[data-emptied]"), function (field) {
      field.disabled = false;
      field.removeAttribute("data-emptied");
    });
  });

  // (c) Buttons and links with data-confirm="message" ask before they act.
  document.addEventListener("click", function (event) {
    var target = event.target instanceof Element ? event.target.closest("[data-confirm]") : null;
    if (target && !window.confirm(target.getAttribute("data-confirm"))) {
      event.preventDefault();
      event.stopImmediatePropagation();
    }
  }, true);

  // (e) The phone header's Menu and the board's Filters are <details>: Escape closes the open one (focus
  // back on its button) and so does a click outside it, as people expect of a menu.
  var folding = ".site-menu, .filters-box";
  document.addEventListener("keydown", function (event) {
    if (event.key !== "Escape") return;
    var open = event.target instanceof Element ? event.target.closest(folding) : null;
    open = open && open.open ? open : document.querySelector(".site-menu[open], .filters-box[open]");
    if (!open) return;
    open.open = false;
    var summary = open.querySelector("summary");
    if (summary) summary.focus();
  });
  document.addEventListener("click", function (event) {
    var inside = event.target instanceof Element ? event.target.closest(folding) : null;
    Array.prototype.forEach.call(document.querySelectorAll(".site-menu[open], .filters-box[open]"), function (box) {
      if (box !== inside) box.open = false;
    });
  });

  // (d) The item editor's "Limit to segments" only applies to customer items: shown only for them.
  ready(function () {
    var group = document.querySelector("[data-shown-for-visibility]");
    var select = document.getElementById("f-visibility");
    if (!group || !select) return;
    function sync() { group.hidden = select.value !== group.getAttribute("data-shown-for-visibility"); }
    select.addEventListener("change", sync);
    sync();
  });

  // (e) "Scroll sideways for more columns" over a table box, shown only while the box does scroll sideways.
  ready(function () {
    Array.prototype.forEach.call(document.querySelectorAll("[data-scroll-hint-for]"), function (hint) {
      var box = document.getElementById(hint.getAttribute("data-scroll-hint-for"));
      if (!box) return;
      function sync() { hint.classList.toggle("is-shown", box.scrollWidth > box.clientWidth + 1); }
      if (typeof ResizeObserver === "function") new ResizeObserver(sync).observe(box);
      else window.addEventListener("resize", sync);
      sync();
    });
  });

  ready(function () {
    // (b) After a failed submit, move focus to the error summary so it is read out first.
    var summary = document.querySelector(".error-summary");
    if (summary) {
      if (!summary.hasAttribute("tabindex")) summary.setAttribute("tabindex", "-1");
      summary.focus();
    }
  });
})();

// --- Character counts: a long text is never cut silently ----------------------------------------------
// A textarea with data-max-chars (the comment and reply boxes, the vote's "tell us why", an idea's
// description) carries no maxlength, which would cut a long paste without a word. Instead a counter below it says how many characters are left or too many,
// the field refuses to submit while it is too long, and a polite live region reads the count out once
// typing pauses (not on every keystroke). Without JavaScript the server refuses and keeps the text.
(function () {
  "use strict";

  function format(n) { return n.toLocaleString("en"); }

  function countText(length, max) {
    var left = max - length;
    if (left >= 0) return format(left) + (left === 1 ? " character" : " characters") + " left";
    return format(-left) + (left === -1 ? " character" : " characters") + " too many";
  }

  function attach(field) {
    var max = parseInt(field.getAttribute("data-max-chars"), 10);
    if (!(max > 0) || field.hasAttribute("data-counted")) return;
    field.setAttribute("data-counted", "");
    var count = document.createElement("p");
    count.className = "char-count";
    count.id = field.id + "-count";
    var live = document.createElement("p");
    live.className = "visually-hidden";
    live.setAttribute("aria-live", "polite");
    field.insertAdjacentElement("afterend", count);
    count.insertAdjacentElement("afterend", live);
    var described = (field.getAttribute("aria-describedby") || "").split(/\s+/).filter(Boolean);
    field.setAttribute("aria-describedby", described.concat(count.id).join(" "));
    var timer = null;
    var spoken = "";

    function update() {
      // Characters as the server counts them: code points, surrounding blanks trimmed.
      var length = Array.from(field.value.trim()).length;
      var text = countText(length, max);
      var over = length > max;
      count.textContent = text;
      count.classList.toggle("is-over", over);
      field.setCustomValidity(over ? "Too long by " + format(length - max) + ": shorten it to " + format(max) +
        " characters or fewer." : "");
      return text;
    }

    function speak() {
      var text = update();
      var near = Array.from(field.value.trim()).length >= max * 0.9;
      // Quiet while there is plenty of room; once near or over the limit, say where things stand.
      if ((near || spoken) && text !== spoken) {
        spoken = near ? text : "";
        live.textContent = near ? text : "";
      }
    }

    field.addEventListener("input", function () {
      update();
      if (timer) clearTimeout(timer);
      timer = setTimeout(speak, 1000);
    });
    update();
  }

  function start(root) {
    Array.prototype.forEach.call((root || document).querySelectorAll("textarea[data-max-chars]"), attach);
  }

  if (document.readyState !== "loading") start();
  else document.addEventListener("DOMContentLoaded", function () { start(); });
  // Parts of a page swapped in by a script (the vote widget) say so with this event; their boxes count too.
  document.addEventListener("ahead:replaced", function (event) {
    if (event.target instanceof Element) start(event.target);
  });
})();
// --- end of character counts --------------------------------------------------------------------------

// --- Ideas: similar items while the title is typed (feedback) -------------------------------------------
// The idea form's container names its title field and endpoint; the endpoint answers an HTML fragment
// rendered (and escaped) by the server, listing only items the viewer may see. Without JavaScript the
// "Check for similar items" button shows the same list.
(function () {
  "use strict";

  function start() {
    var box = document.querySelector("[data-similar-source][data-similar-url]");
    if (!box) return;
    var input = document.getElementById(box.getAttribute("data-similar-source"));
    if (!input) return;
    var url = box.getAttribute("data-similar-url");
    var timer = null;
    var last = input.value.trim();
    var controller = null;

    function load() {
      var q = input.value.trim();
      if (q === last) return;
      last = q;
      if (controller) controller.abort();
      if (q.length < 3) { box.innerHTML = ""; return; }
      controller = typeof AbortController === "function" ? new AbortController() : null;
      fetch(url + "?q=" + encodeURIComponent(q), {
        headers: { "Accept": "text/html" },
        credentials: "same-origin",
        signal: controller ? controller.signal : undefined
      }).then(function (response) {
        return response.ok ? response.text() : "";
      }).then(function (html) {
        if (input.value.trim() === q) box.innerHTML = html;
      }).catch(function () { /* offline or aborted: keep what is shown */ });
    }

    input.addEventListener("input", function () {
      if (timer) clearTimeout(timer);
      timer = setTimeout(load, 350);
    });
  }

  if (document.readyState !== "loading") start();
  else document.addEventListener("DOMContentLoaded", start);
})();
// --- end of ideas ------------------------------------------------------------------------------------

// --- Voting and following without a reload (app/voting/views.py, templates/voting/) -------------------
// The vote and follow forms work as plain forms. With this, a submit posts the same form with fetch
// (X-CSRF-Token from the page's meta tag, Accept: application/json), the widget is replaced by the HTML
// the server sends back, focus returns to the equivalent control, and the outcome is read out through
// one polite live region. Anything unexpected falls back to the plain form submit.
(function () {
  "use strict";

  var region = null;

  function liveRegion() {
    if (!region) {
      region = document.createElement("div");
      region.id = "vote-live";
      region.className = "visually-hidden";
      region.setAttribute("aria-live", "polite");
      document.body.appendChild(region);
    }
    return region;
  }

  function announce(text) {
    var live = liveRegion();
    live.textContent = "";
    // A fresh text node after a tick, so the same message twice is read twice.
    window.setTimeout(function () { live.textContent = text || ""; }, 60);
  }

  // Back and Forward show a page as it was when it was left: after a vote or a follow sent from this tab since
  // then, a page from the browser's history may show the old one, so it is loaded again. This tab's
  // sessionStorage holds when a vote or a follow last changed something, and per address when its page was last
  // fetched; a page kept whole in memory (the back/forward cache) knows itself since when it is current.
  var CHANGED = "ahead:votes-changed";
  var fetchedKey = "ahead:fetched:" + location.pathname + location.search;
  var currentSince = Date.now();
  function stored(key) {
    try { return Number(window.sessionStorage.getItem(key)) || 0; } catch (e) { return 0; }
  }
  function store(key, value) {
    try { window.sessionStorage.setItem(key, String(value)); } catch (e) { /* storage off: nothing kept */ }
  }
  function loadAgain() {
    // Never for the answer to a form sent: loading it again would send the form again.
    if (!document.querySelector('meta[name="ahead-answer-to-post"]')) window.location.reload();
  }
  var navigation = window.performance && performance.getEntriesByType ?
    performance.getEntriesByType("navigation")[0] : null;
  if (navigation && navigation.type === "back_forward") {
    // Parsed again from the browser's cache: as current as when this address was last fetched.
    if (stored(CHANGED) > stored(fetchedKey)) loadAgain();
  } else {
    store(fetchedKey, currentSince);
  }
  window.addEventListener("pageshow", function (event) {
    if (event.persisted && stored(CHANGED) > currentSince) loadAgain();
  });

  // The region exists before anything changes: screen readers ignore regions created with their text.
  if (document.readyState !== "loading") liveRegion();
  else document.addEventListener("DOMContentLoaded", liveRegion);

  function showError(widget, text) {
    var note = widget.querySelector("[data-vote-error]");
    if (!note) {
      note = document.createElement("p");
      note.className = "field-error";
      note.setAttribute("data-vote-error", "");
      widget.insertBefore(note, widget.firstChild);
    }
    note.textContent = text;
    announce(text);
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!(form instanceof HTMLFormElement) || !form.hasAttribute("data-vote-form")) return;
    var widget = form.closest("[data-vote-widget]");
    if (!widget || !window.fetch || !window.URLSearchParams) return;
    event.preventDefault();
    if (form.getAttribute("aria-busy") === "true") return;

    var active = document.activeElement;
    var key = (active && form.contains(active) && active.getAttribute("data-focus")) ||
      (event.submitter && event.submitter.getAttribute("data-focus")) || "vote";
    var meta = document.querySelector('meta[name="csrf-token"]');
    form.setAttribute("aria-busy", "true");

    fetch(form.action, {
      method: "POST",
      body: new URLSearchParams(new FormData(form)),
      credentials: "same-origin",
      headers: { "X-CSRF-Token": meta ? meta.content : "", "Accept": "application/json" }
    }).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (data) {
        return { ok: response.ok, status: response.status, data: data };
      });
    }).then(function (result) {
      form.removeAttribute("aria-busy");
      if (result.ok && result.data.html) {
        currentSince = Date.now();  // this page shows the change; pages in the history do not
        store(CHANGED, currentSince);
        var holder = document.createElement("div");
        holder.innerHTML = result.data.html.trim();
        var fresh = holder.firstElementChild;
        widget.replaceWith(fresh);
        var follow = document.getElementById("follow");
        if (result.data.follow_html && follow) {
          var other = document.createElement("div");
          other.innerHTML = result.data.follow_html.trim();
          if (other.firstElementChild) follow.replaceWith(other.firstElementChild);
        }
        fresh.dispatchEvent(new CustomEvent("ahead:replaced", { bubbles: true }));
        var target = fresh.querySelector('[data-focus="' + key + '"]') ||
          fresh.querySelector('[data-focus="vote"]') || fresh.querySelector("[data-focus]");
        // Focus returns to the equivalent control without scrolling to it: the new widget can be much taller
        // (a saved reason, its box), and scrolling to its button pushed the confirmation above the window.
        if (target) target.focus({ preventScroll: true });
        var done = fresh.querySelector("[data-vote-done]");
        var box = (done || fresh).getBoundingClientRect();
        if (box.top < 0 || box.bottom > window.innerHeight) {
          (done || fresh).scrollIntoView({ block: "nearest" });
        }
        announce(result.data.message);
      } else if (result.status === 401) {
        form.submit();  // the plain form sends a signed-out person to sign in and back
      } else if (result.data && result.data.detail) {
        var fields = result.data.fields || {};
        var first = Object.keys(fields)[0];
        showError(widget, first ? fields[first] : result.data.detail);
      } else {
        form.submit();
      }
    }).catch(function () {
      form.removeAttribute("aria-busy");
      form.submit();
    });
  });
})();
// --- end of voting and following ---------------------------------------------------------------
