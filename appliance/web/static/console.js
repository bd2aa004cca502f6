// VertebraFormer console: the little behaviour the server-rendered pages need.
// Loaded as an external file: the Content-Security-Policy forbids inline script.
"use strict";

document.addEventListener("DOMContentLoaded", function () {
  // Forms marked data-confirm ask before they submit (delete a series, disable a user...).
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.getAttribute("data-confirm"))) {
        event.preventDefault();
      }
    });
  });
  // Submit buttons are disabled after the first click so a slow action (C-ECHO, bundle
  // upload) is not sent twice.
  document.querySelectorAll("form").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (event.defaultPrevented) {
        return;
      }
      form.querySelectorAll("button[type=submit]").forEach(function (b) {
        window.setTimeout(function () { b.disabled = true; }, 0);
      });
    });
  });
});
