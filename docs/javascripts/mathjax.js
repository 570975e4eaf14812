// MathJax configuration for pymdownx.arithmatex (generic mode); MathJax itself is vendored from the npm
// registry by docs/vendor_mathjax.sh, so the pages render their equations without a network.
window.MathJax = {
  tex: { inlineMath: [["\\(", "\\)"]], displayMath: [["\\[", "\\]"]], processEscapes: true },
  options: { ignoreHtmlClass: ".*|", processHtmlClass: "arithmatex" },
};
