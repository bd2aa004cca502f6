// VertebraFormer result viewer: three slice panes (axial, sagittal, coronal) rendered by the
// server as PNG, window presets, label overlay and lesion heatmap toggles, and the vertebra and
// lesion tables whose rows jump the panes to their slices. Plain JavaScript, no build step,
// loaded as an external file (the Content-Security-Policy allows no inline script or style
// attribute; colours are set through the CSSOM, which it permits).
//
// Page: one element `<section id="viewer" data-base="BASE"></section>` plus this script and
// viewer.css (docs/viewer.md); everything inside the section is built here.
//
// Endpoints (served by the console, implemented by vertebrad::viewer):
//   GET BASE/info.json
//       -> vertebrad::viewer::ViewerInfo: planes[] {plane, slices, width, height, pixel_mm,
//          initial, edges[left,right,top,bottom], increasing}, windows[] {key, center, width},
//          has_heatmap, vertebrae[] {name, color, volume_mm3, mean_hu, core_mean_hu,
//          height_ratios, height_loss, genant_grade, slices{axial,sagittal,coronal}},
//          lesions[] {class, color, score, vertebra, size_mm, slices{...}}, disclaimer.
//   GET BASE/slice/{plane}/{index}.png?window=bone|soft&overlay=0|1&heatmap=0|1
//       -> image/png, `width` x `height` of the plane (square pixels, radiological
//          orientation: see vertebrad::viewer).
//
// When the three panes have painted their first images the script records the performance
// mark "vertebra-viewer-first-paint", sets data-state="ready" on #viewer and exposes
// window.vertebraViewer.firstPaintMs (ms since navigation start) for the browser tests.
"use strict";

(function () {
  var PLANES = ["axial", "sagittal", "coronal"];
  var TITLES = { axial: "Axial", sagittal: "Sagittal", coronal: "Coronal" };
  var CLASS_NAMES = {
    fracture: "Fracture",
    lytic_metastasis: "Lytic metastasis",
    sclerotic_metastasis: "Sclerotic metastasis",
    infection_erosion: "Infection / erosion"
  };

  function el(tag, attrs, children) {
    var e = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") {
        e.textContent = attrs[k];
      } else {
        e.setAttribute(k, attrs[k]);
      }
    });
    (children || []).forEach(function (c) { e.appendChild(c); });
    return e;
  }

  function fmt(v, digits) {
    return v === null || v === undefined ? "—" : Number(v).toFixed(digits);
  }

  function Viewer(root) {
    this.root = root;
    this.base = root.getAttribute("data-base").replace(/\/$/, "");
    this.window = null;
    this.overlay = true;
    this.heatmap = false;
    this.panes = {};
    this.painted = 0;
  }

  Viewer.prototype.status = function (text) {
    this.statusLine.textContent = text;
  };

  Viewer.prototype.start = function () {
    var self = this;
    this.statusLine = el("p", { "class": "viewer-status", role: "status", text: "Loading…" });
    this.root.appendChild(this.statusLine);
    fetch(this.base + "/info.json", { credentials: "same-origin" })
      .then(function (r) {
        if (!r.ok) {
          throw new Error("the viewer description answered " + r.status);
        }
        return r.json();
      })
      .then(function (info) { self.build(info); })
      .catch(function (e) {
        self.root.setAttribute("data-state", "error");
        self.status("Cannot show this result: " + e.message);
      });
  };

  Viewer.prototype.build = function (info) {
    var self = this;
    this.info = info;
    this.window = info.windows[0].key;
    var toolbar = el("div", { "class": "viewer-toolbar" });
    var windows = el("div", { "class": "viewer-windows", role: "group", "aria-label": "Window" });
    this.windowButtons = info.windows.map(function (w) {
      var b = el("button", {
        type: "button",
        "data-window": w.key,
        title: "Centre " + w.center + " HU, width " + w.width + " HU",
        text: w.key === "bone" ? "Bone" : w.key === "soft" ? "Soft tissue" : w.key
      });
      b.addEventListener("click", function () {
        self.window = w.key;
        self.refreshButtons();
        self.reloadAll();
      });
      windows.appendChild(b);
      return b;
    });
    toolbar.appendChild(windows);
    toolbar.appendChild(this.toggle("viewer-overlay", "Labels", true, function (on) {
      self.overlay = on;
      self.reloadAll();
    }));
    toolbar.appendChild(this.toggle(
      "viewer-heatmap",
      info.has_heatmap ? "Lesion heatmap" : "Lesion markers",
      false,
      function (on) {
        self.heatmap = on;
        self.reloadAll();
      }
    ));
    this.root.insertBefore(toolbar, this.statusLine);
    var panes = el("div", { "class": "viewer-panes" });
    info.planes.forEach(function (p) { panes.appendChild(self.pane(p)); });
    this.root.insertBefore(panes, this.statusLine);
    this.root.insertBefore(this.vertebraTable(info.vertebrae), this.statusLine);
    this.root.insertBefore(this.lesionTable(info.lesions), this.statusLine);
    this.root.insertBefore(
      el("p", { "class": "viewer-disclaimer", text: info.disclaimer }),
      this.statusLine
    );
    this.refreshButtons();
    this.status("");
    this.reloadAll();
  };

  Viewer.prototype.toggle = function (id, text, checked, onChange) {
    var box = el("input", { type: "checkbox", id: id });
    box.checked = checked;
    box.addEventListener("change", function () { onChange(box.checked); });
    return el("label", { "class": "viewer-toggle", "for": id }, [box, document.createTextNode(" " + text)]);
  };

  Viewer.prototype.refreshButtons = function () {
    var self = this;
    this.windowButtons.forEach(function (b) {
      b.setAttribute("aria-pressed", String(b.getAttribute("data-window") === self.window));
    });
  };

  Viewer.prototype.pane = function (p) {
    var self = this;
    var img = el("img", {
      id: "viewer-" + p.plane,
      alt: TITLES[p.plane] + " slice",
      width: String(p.width),
      height: String(p.height)
    });
    var slider = el("input", {
      type: "range",
      id: "viewer-" + p.plane + "-slice",
      min: "0",
      max: String(p.slices - 1),
      step: "1",
      value: String(p.initial),
      "aria-label": TITLES[p.plane] + " slice"
    });
    var caption = el("figcaption");
    var edges = el("div", { "class": "viewer-edges", "aria-hidden": "true" }, [
      el("span", { "class": "edge-left", text: p.edges[0] }),
      el("span", { "class": "edge-right", text: p.edges[1] }),
      el("span", { "class": "edge-top", text: p.edges[2] }),
      el("span", { "class": "edge-bottom", text: p.edges[3] })
    ]);
    var frame = el("div", { "class": "viewer-frame" }, [img, edges]);
    var figure = el("figure", { "class": "viewer-pane", "data-plane": p.plane }, [frame, slider, caption]);
    var pane = {
      info: p,
      img: img,
      slider: slider,
      caption: caption,
      wanted: p.initial,
      url: null,
      loading: false,
      firstPainted: false
    };
    img.addEventListener("load", function () { self.loaded(pane); });
    img.addEventListener("error", function () {
      pane.loading = false;
      self.status("A " + p.plane + " slice could not be loaded.");
    });
    slider.addEventListener("input", function () { self.show(p.plane, Number(slider.value)); });
    this.panes[p.plane] = pane;
    return figure;
  };

  Viewer.prototype.url = function (pane) {
    return this.base + "/slice/" + pane.info.plane + "/" + pane.wanted + ".png?window=" +
      encodeURIComponent(this.window) + "&overlay=" + (this.overlay ? 1 : 0) +
      "&heatmap=" + (this.heatmap ? 1 : 0);
  };

  // Loads the wanted image unless one is in flight; `loaded` then catches up with the latest
  // wanted slice, so dragging a slider never queues more than one request per pane.
  Viewer.prototype.request = function (pane) {
    var url = this.url(pane);
    pane.caption.textContent = TITLES[pane.info.plane] + " " + (pane.wanted + 1) + " / " +
      pane.info.slices + " (towards " + pane.info.increasing + ")";
    if (pane.loading || url === pane.url) {
      return;
    }
    pane.loading = true;
    pane.url = url;
    pane.img.src = url;
  };

  Viewer.prototype.loaded = function (pane) {
    pane.loading = false;
    if (!pane.firstPainted) {
      pane.firstPainted = true;
      this.painted += 1;
      if (this.painted === PLANES.length) {
        this.firstPaint();
      }
    }
    if (this.url(pane) !== pane.url) {
      this.request(pane);
    }
  };

  Viewer.prototype.firstPaint = function () {
    if (window.performance && performance.mark) {
      performance.mark("vertebra-viewer-first-paint");
    }
    window.vertebraViewer = {
      firstPaintMs: window.performance ? performance.now() : null,
      viewer: this
    };
    this.root.setAttribute("data-state", "ready");
  };

  Viewer.prototype.show = function (plane, index) {
    var pane = this.panes[plane];
    var i = Math.max(0, Math.min(pane.info.slices - 1, Math.round(index)));
    pane.wanted = i;
    pane.slider.value = String(i);
    this.request(pane);
  };

  Viewer.prototype.reloadAll = function () {
    var self = this;
    PLANES.forEach(function (p) {
      if (self.panes[p]) {
        self.request(self.panes[p]);
      }
    });
  };

  Viewer.prototype.jump = function (slices) {
    var self = this;
    PLANES.forEach(function (p) { self.show(p, slices[p]); });
  };

  Viewer.prototype.rowJumps = function (tr, slices) {
    var self = this;
    tr.tabIndex = 0;
    tr.setAttribute("data-axial", String(slices.axial));
    tr.setAttribute("data-sagittal", String(slices.sagittal));
    tr.setAttribute("data-coronal", String(slices.coronal));
    tr.addEventListener("click", function () { self.jump(slices); });
    tr.addEventListener("keydown", function (ev) {
      if (ev.key === "Enter" || ev.key === " ") {
        ev.preventDefault();
        self.jump(slices);
      }
    });
  };

  function swatch(color) {
    var s = el("span", { "class": "viewer-swatch", "aria-hidden": "true" });
    s.style.backgroundColor = color;
    return s;
  }

  function table(id, caption, headers, rows) {
    var head = el("tr", {}, headers.map(function (h) {
      return el("th", { scope: "col", "class": h[1] ? "num" : "", text: h[0] });
    }));
    var body = el("tbody", {}, rows);
    return el("table", { id: id, "class": "viewer-table" }, [
      el("caption", { text: caption }),
      el("thead", {}, [head]),
      body
    ]);
  }

  function cell(text, numeric) {
    return el("td", { "class": numeric ? "num" : "", text: text });
  }

  Viewer.prototype.vertebraTable = function (vertebrae) {
    var self = this;
    var rows = vertebrae.map(function (v) {
      var name = el("td", {}, [swatch(v.color), document.createTextNode(" " + v.name)]);
      var r = v.height_ratios;
      var tr = el("tr", { "data-name": v.name }, [
        name,
        cell(fmt(v.volume_mm3 / 1000, 1), true),
        cell(fmt(v.mean_hu, 0), true),
        cell(fmt(v.core_mean_hu, 0), true),
        cell(r ? fmt(r.anterior_posterior, 2) : "—", true),
        cell(r ? fmt(r.middle_posterior, 2) : "—", true),
        cell(v.height_loss === null ? "—" : fmt(100 * v.height_loss, 0) + " %", true),
        cell(v.genant_grade === null ? "—" : String(v.genant_grade), true)
      ]);
      self.rowJumps(tr, v.slices);
      return tr;
    });
    return table("viewer-vertebrae", "Vertebrae (select a row to show it)", [
      ["Vertebra", false], ["Volume (mL)", true], ["Mean HU", true], ["Core HU", true],
      ["Ha/Hp", true], ["Hm/Hp", true], ["Height loss", true], ["Genant", true]
    ], rows);
  };

  Viewer.prototype.lesionTable = function (lesions) {
    var self = this;
    var rows = lesions.map(function (l) {
      var cls = el("td", {}, [swatch(l.color), document.createTextNode(" " + (CLASS_NAMES[l.class] || l.class))]);
      var tr = el("tr", { "data-class": l.class }, [
        cls,
        cell(fmt(l.score, 2), true),
        cell(l.vertebra || "—", false),
        cell(l.size_mm.map(function (s) { return fmt(s, 0); }).join(" × "), true)
      ]);
      self.rowJumps(tr, l.slices);
      return tr;
    });
    if (rows.length === 0) {
      rows = [el("tr", {}, [el("td", { colspan: "4", "class": "muted", text: "No lesion found." })])];
    }
    return table("viewer-lesions", "Lesions (select a row to show it)", [
      ["Class", false], ["Score", true], ["Vertebra", false], ["Size (mm)", true]
    ], rows);
  };

  function init() {
    var root = document.getElementById("viewer");
    if (root && root.getAttribute("data-base")) {
      new Viewer(root).start();
    }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
}());
