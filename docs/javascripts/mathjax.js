// MathJax configuration for pymdownx.arithmatex (generic mode); MathJax itself is loaded below from the
// page's own copy when online; offline readers see the TeX source, which is written to be readable.
window.MathJax = {
  tex: { inlineMath: [["\\(", "\\)"]], displayMath: [["\\[", "\\]"]], processEscapes: true },
  options: { ignoreHtmlClass: ".*|", processHtmlClass: "arithmatex" },
};
