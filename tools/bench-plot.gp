# tools/bench-plot.gp: the RTT plot of docs/performance.md (called by tools/bench).
#
# Variables (gnuplot -e): outfile, ptitle, panels (number of panels, one per
# link), ymin, ymax (the shared y range), nsizes, xtics_spec ('"64 B" 1, "1 KB" 2, ...'), and for each panel k:
# filek (data file), namesk (series names, space-separated), titlek.
# Data: one block per series (separated by two blank lines, in the order of
# namesk), rows "x p50_us p999_us". A series is drawn as a dot at p50 with a
# bar up to p99.9; the y axis is logarithmic.

if (strstrt(GPVAL_TERMINALS, "pngcairo") > 0) {
  set terminal pngcairo size (panels > 1 ? 560 * panels + 80 : 820), 580 font "Sans,10" noenhanced
} else {
  set terminal png size (panels > 1 ? 560 * panels + 80 : 820), 580 noenhanced
}
set output outfile

set logscale y 10
set yrange [ymin : ymax]
set format y "%g"
set ylabel "RTT (µs), log scale"
set grid ytics mytics lc rgb "#dddddd"
set mytics 10
set xrange [0.5 : nsizes + 0.5]
eval "set xtics (" . xtics_spec . ")"
unset xlabel
set key outside bottom center horizontal samplen 1 maxrows 2
set border 3
set tics nomirror

# Fixed colours and points per series name.
colour(n) = (n eq "link-floor") ? "#000000" : (n eq "runtime") ? "#1f77b4" : (n eq "sidecar") ? "#d62728" : \
            (n eq "kernel-udp") ? "#2ca02c" : (n eq "kernel-udp-busy") ? "#9467bd" : "#7f7f7f"
label(n) = (n eq "link-floor") ? "link floor (one frame)" : n
ptype(n) = (n eq "link-floor") ? 5 : (n eq "runtime") ? 7 : (n eq "sidecar") ? 9 : (n eq "kernel-udp") ? 11 : 13

set multiplot layout 1, panels title ptitle margins 0.08, 0.98, 0.2, 0.87 spacing 0.07, 0.1
do for [k = 1:panels] {
  f = value(sprintf("file%d", k))
  nm = value(sprintf("names%d", k))
  set title value(sprintf("title%d", k))
  plot for [i = 1:words(nm)] f index (i - 1) using 1:2:2:3 with yerrorbars \
         lc rgb colour(word(nm, i)) pt ptype(word(nm, i)) ps 1.2 lw 1.5 title label(word(nm, i))
}
unset multiplot
