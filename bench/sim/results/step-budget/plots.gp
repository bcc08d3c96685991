
set terminal pngcairo size 900,560
set output 'sweep.png'
set title 'Fixed step caps on the burst replay (one run each)'
set logscale x 2
set xlabel 'max_num_batched_tokens'
set ylabel 'TPOT (ms)'
set y2label 'TTFT and mean E2E (ms)'
set ytics nomirror
set y2tics
set key top center
plot 'sweep.dat' using 1:2 with linespoints title 'TPOT p50',      '' using 1:3 with linespoints title 'TPOT p99',      '' using 1:4 axes x1y2 with linespoints title 'TTFT p50',      '' using 1:6 axes x1y2 with linespoints title 'E2E mean'

set terminal pngcairo size 1875,400
set output 'compare.png'
unset logscale
unset y2label
unset y2tics
set ytics mirror
set multiplot layout 1,5 title 'One run each (deterministic); target 16.0 ms'
set style fill solid 0.5
set boxwidth 0.6
set xrange [-0.6:5.6]
set key off
set xlabel ''
set title 'gaps within target (%)'
set ylabel ''
set yrange [0:100]
plot 'compare.dat' using 1:3:xtic(2) with boxes, '' using 1:3:4:5 with yerrorbars lc rgb 'black'
set title 'requests, TPOT within target (%)'
plot 'compare.dat' using 1:15:xtic(2) with boxes, '' using 1:15:16:17 with yerrorbars lc rgb 'black'
set autoscale y
set yrange [0:*]
set title 'TPOT p99 (ms)'
plot 'compare.dat' using 1:6:xtic(2) with boxes, '' using 1:6:7:8 with yerrorbars lc rgb 'black'
set title 'TTFT p99 (ms, log scale)'
set logscale y
set yrange [*:*]
plot 'compare.dat' using 1:9:xtic(2) with boxes, '' using 1:9:10:11 with yerrorbars lc rgb 'black'
set title 'tokens/s (prompt + generated)'
unset logscale y
set yrange [0:*]
plot 'compare.dat' using 1:12:xtic(2) with boxes, '' using 1:12:13:14 with yerrorbars lc rgb 'black'
unset multiplot
