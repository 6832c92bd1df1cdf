"use strict";
// The page is built from the JSON above with textContent and attributes only: file names,
// labels and notes are shown as text, never parsed as markup.
(function () {
  const data = JSON.parse(document.getElementById("xai-data").textContent);
  const CHUNK = 120; // cards added at a time, so 10,000 images stay responsive
  // figure -> [its name in the header and the sort menu, its short name on a card]
  const FIGURES = { deletion: ["deletion AUC", "del"], insertion: ["insertion AUC", "ins"],
                    pointing: ["pointing", "pointing"], energy: ["energy in object", "energy"], iou: ["IoU", "IoU"] };
  const byId = (id) => document.getElementById(id);
  const element = (tag, className, text) => {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  };

  function describeRun(run) {
    const facts = byId("facts");
    const rows = [
      ["Model", `${run.model} (${run.format})`],
      ["SHA-256", run.sha256],
      ["Layer", run.layer ? `${run.layer} (${run.layer_reason})` : "input gradients"],
      ["Preprocessing", `${run.preprocess} (${run.preprocess_reason})`],
      ["Methods", (run.methods || []).join(", ")],
      ["Output", run.kind || "classifier"],
      ["Run", `${run.status}, ${Number(run.seconds).toFixed(1)} s`],
      ...(run.accuracy && run.accuracy.images ? [["Accuracy", `${(100 * run.accuracy.accuracy).toFixed(1)}% ` +
        `${run.accuracy.labels ? "(every label right) " : ""}(${run.accuracy.correct} of ${run.accuracy.images} ` +
        `labelled images)${run.accuracy.f1 === null || run.accuracy.f1 === undefined ? "" :
          `; macro F1 ${Number(run.accuracy.f1).toFixed(3)}`}`]] : []),
      ...Object.entries(run.metrics || {}).map(([method, means]) => [`Figures, ${method}`,
        Object.entries(means).filter(([, value]) => value !== null)
          .map(([name, value]) => `${FIGURES[name] ? FIGURES[name][0] : name} ${Number(value).toFixed(3)}`).join(", ")]),
      ["Versions", run.versions],
      ["Table", run.table || "written to standard output"],
    ];
    for (const [name, value] of rows) {
      facts.append(element("dt", "", name), element("dd", "", value));
    }
    const counts = run.counts || {};
    byId("counts").textContent = `${counts.images || 0} images: ${counts.explained || 0} explained, ` +
      `${counts.failed || 0} failed, ${counts.skipped || 0} skipped, ${counts.resumed || 0} resumed`;
  }

  function listFailures(cards) {
    const failed = cards.filter((card) => card.status === "error");
    if (!failed.length) return;
    byId("failed").hidden = false;
    byId("failed-title").textContent = `${failed.length} failed image${failed.length > 1 ? "s" : ""}`;
    const list = byId("failed-list");
    for (const card of failed) {
      const item = element("li");
      item.append(element("span", "path", card.input), document.createTextNode(" — "),
                  element("span", "reason", card.errors.join("; ")));
      list.append(item);
    }
  }

  function offerClasses(cards) {
    const select = byId("filter-class");
    const labels = [...new Set(cards.flatMap((card) => card.labels))].sort();
    for (const label of labels) {
      const option = element("option", "", label);
      option.value = label;
      select.append(option);
    }
  }

  const figureOf = (card, name) => {
    const value = card.maps.length && card.maps[0].figures ? card.maps[0].figures[name] : undefined;
    return value === undefined ? null : value;
  };

  function offerFigures(cards) {
    const present = Object.keys(FIGURES).filter((name) => cards.some((card) => figureOf(card, name) !== null));
    const sort = byId("sort");
    for (const name of present) {
      for (const direction of ["asc", "desc"]) {
        const option = element("option", "", `${FIGURES[name][0]}, ${direction === "asc" ? "lowest" : "highest"} first`);
        option.value = `figure-${direction}:${name}`;
        sort.append(option);
      }
    }
    byId("pointing-filter").hidden = !present.includes("pointing");
  }

  // A multi-label run: each label's precision, recall and F1 (no confusion matrix: an image has several labels).
  function drawLabelScores(accuracy) {
    byId("confusion-title").textContent = "Per-label scores";
    byId("confusion-hint").textContent = "Over the labelled images; a label counts where it is true or predicted.";
    const matrix = byId("matrix");
    const head = element("tr");
    for (const name of ["label", "precision", "recall", "F1", "images"]) head.append(element("th", "", name));
    matrix.append(head);
    const shown = (value) => (value === null ? "–" : Number(value).toFixed(3));
    for (const [label, scores] of Object.entries(accuracy.labels)) {
      const row = element("tr");
      row.append(element("th", "", label), element("td", "", shown(scores.precision)),
                 element("td", "", shown(scores.recall)), element("td", "", shown(scores.f1)),
                 element("td", "", String(scores.support)));
      matrix.append(row);
    }
    byId("confusion").hidden = false;
  }

  function drawMatrix(cards) {
    if (data.run.accuracy && data.run.accuracy.labels) {
      drawLabelScores(data.run.accuracy);
      return;
    }
    const labelled = cards.filter((card) => card.true_label && card.pred_prob !== null);
    if (!labelled.length) return;
    const classes = [...new Set(labelled.flatMap((card) => [card.true_label, card.pred_label]))].sort();
    const counts = new Map();
    for (const card of labelled) {
      const key = JSON.stringify([card.true_label, card.pred_label]);
      counts.set(key, (counts.get(key) || 0) + 1);
    }
    const matrix = byId("matrix");
    const head = element("tr");
    head.append(element("th", "corner", "true \\ predicted"));
    for (const name of classes) head.append(element("th", "", name));
    matrix.append(head);
    for (const truth of classes) {
      const row = element("tr");
      row.append(element("th", "", truth));
      for (const predicted of classes) {
        const count = counts.get(JSON.stringify([truth, predicted])) || 0;
        const cell = element("td", count ? (truth === predicted ? "right" : "wrong") : "empty");
        const button = element("button", "", String(count));
        button.type = "button";
        button.dataset.truth = truth;
        button.dataset.predicted = predicted;
        button.addEventListener("click", () => {
          state.cell = { truth, predicted };
          for (const other of matrix.querySelectorAll("button")) other.classList.toggle("chosen", other === button);
          byId("cell-text").textContent = `Showing images labelled ${truth} and predicted ${predicted}.`;
          byId("cell-filter").hidden = false;
          choose();
          byId("controls").scrollIntoView();
        });
        cell.append(button);
        row.append(cell);
      }
      matrix.append(row);
    }
    byId("confusion").hidden = false;
    byId("clear-cell").addEventListener("click", () => {
      state.cell = null;
      byId("cell-filter").hidden = true;
      for (const other of matrix.querySelectorAll("button")) other.classList.remove("chosen");
      choose();
    });
  }

  function drawCard(card) {
    const node = element("article", `card status-${card.status}${card.status === "error" ? " error" : ""}`);
    node.dataset.input = card.input;
    node.dataset.status = card.status;
    node.dataset.label = card.pred_label;
    node.dataset.truth = card.true_label;
    if (card.pred_prob !== null) node.dataset.prob = String(card.pred_prob);
    if (card.maps.length) {
      const maps = element("div", "maps");
      for (const map of card.maps) {
        const cell = element("figure", "map");
        cell.style.margin = "0";
        const picture = element("img");
        picture.loading = "lazy";
        picture.alt = `${map.method} map of ${card.input}`;
        if (map.thumb) picture.src = map.thumb;
        const link = element("a");
        link.href = map.panel || map.full || map.thumb;
        link.target = "_blank";
        link.rel = "noopener";
        link.append(picture);
        const caption = element("figcaption", "method",
          map.class_label && map.class_label !== card.pred_label ? `${map.method} · ${map.class_label}` : map.method);
        cell.append(link, caption);
        for (const extra of map.links || []) {
          const file = element("a", "file", extra.text);
          file.href = extra.href;
          cell.append(file, " ");
        }
        const figures = Object.entries(map.figures || {});
        if (figures.length) {
          cell.append(element("div", "figures", figures.map(([name, value]) => name === "pointing"
            ? (value ? "hit" : "missed") : `${FIGURES[name] ? FIGURES[name][1] : name} ${value.toFixed(2)}`).join(" · ")));
        }
        maps.append(cell);
      }
      node.append(maps);
    }
    node.append(element("div", "path", card.input));
    const explainsSets = ["multilabel", "segmentation"].includes(data.run.kind);
    if (card.chips.length || (explainsSets && card.status === "ok")) {
      const chips = element("div", "prediction chips");
      for (const chip of card.chips) chips.append(element("span", "chip", chip));
      if (!card.chips.length) {
        chips.append(element("span", "none", data.run.kind === "segmentation" ? "no class in the mask" : "no label present"));
      }
      node.append(chips);
    } else if (card.pred_prob !== null) {
      node.append(element("div", "prediction", `${card.pred_label} ${card.pred_prob.toFixed(3)}`));
    }
    if (card.true_label) {
      const verdict = card.correct === true ? "right" : card.correct === false ? "wrong" : "";
      node.append(element("div", `truth ${verdict}`,
        `true: ${card.true_label}${verdict === "wrong" ? " (misclassified)" : ""}`));
    }
    if (card.note) node.append(element("div", "note", card.note));
    if (card.errors.length) node.append(element("div", "reason", card.errors.join("; ")));
    return node;
  }

  const state = { chosen: [], drawn: 0, cell: null };

  function choose() {
    const label = byId("filter-class").value;
    const status = byId("filter-status").value;
    const text = byId("filter-text").value.toLowerCase();
    const pointing = byId("filter-pointing").value;
    const order = byId("sort").value;
    const chosen = data.cards.filter((card) =>
      (!label || card.labels.includes(label)) && (!status || card.status === status) &&
      (!text || card.input.toLowerCase().includes(text)) &&
      (!pointing || figureOf(card, "pointing") === (pointing === "hit" ? 1 : 0)) &&
      (!state.cell || (card.true_label === state.cell.truth && card.pred_label === state.cell.predicted &&
                       card.pred_prob !== null)));
    const confidence = (card) => (card.pred_prob === null ? Infinity : card.pred_prob);
    if (order === "confidence-asc") chosen.sort((a, b) => confidence(a) - confidence(b));
    if (order === "confidence-desc") chosen.sort((a, b) => (b.pred_prob ?? -1) - (a.pred_prob ?? -1));
    if (order === "path") chosen.sort((a, b) => (a.input < b.input ? -1 : a.input > b.input ? 1 : 0));
    if (order.startsWith("figure-")) {
      const [direction, name] = order.slice("figure-".length).split(":");
      const sign = direction === "asc" ? 1 : -1;
      const value = (card) => figureOf(card, name);
      chosen.sort((a, b) => (value(a) === null) - (value(b) === null) || sign * (value(a) - value(b)));
    }
    state.chosen = chosen;
    state.drawn = 0;
    byId("gallery").replaceChildren();
    drawMore();
  }

  function drawMore() {
    const gallery = byId("gallery");
    const next = state.chosen.slice(state.drawn, state.drawn + CHUNK);
    const batch = document.createDocumentFragment();
    for (const card of next) batch.append(drawCard(card));
    gallery.append(batch);
    state.drawn += next.length;
    byId("more").hidden = state.drawn >= state.chosen.length;
    byId("shown").textContent = `showing ${state.drawn} of ${state.chosen.length} images` +
      (state.chosen.length < data.cards.length ? ` (${data.cards.length} in all)` : "");
  }

  describeRun(data.run);
  listFailures(data.cards);
  offerClasses(data.cards);
  offerFigures(data.cards);
  drawMatrix(data.cards);
  for (const id of ["filter-class", "filter-status", "filter-pointing", "sort"]) {
    byId(id).addEventListener("change", choose);
  }
  byId("filter-text").addEventListener("input", choose);
  byId("more").addEventListener("click", drawMore);
  if ("IntersectionObserver" in window) {
    new IntersectionObserver((entries) => {
      if (entries.some((entry) => entry.isIntersecting) && state.drawn < state.chosen.length) drawMore();
    }, { rootMargin: "800px" }).observe(byId("sentinel"));
  }
  choose();
})();
