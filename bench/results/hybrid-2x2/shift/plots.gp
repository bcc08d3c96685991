set terminal pngcairo size 900,500
set grid
set key bottom right
set title 'shift-bench shift'
set output 'latency_cdf.png'
set xlabel 'ms'
set ylabel 'fraction of requests'
set logscale x
plot 'ttft_cdf.dat' using 1:2 with lines lw 2 title 'TTFT', 'e2e_cdf.dat' using 1:2 with lines lw 2 title 'end to end'
unset logscale x
set key top right
set output 'throughput.png'
set xlabel 'seconds'
set ylabel 'tokens/s'
plot 'timeline.dat' using 1:2 with steps lw 2 title 'generated tokens/s'
set output 'ttft_over_time.png'
set ylabel 'mean TTFT (ms), by start second'
plot 'timeline.dat' using 1:3 with linespoints title 'TTFT'
set output 'modes.png'
set ylabel 'steps/s'
plot 'modes.dat' using 1:2 with lines lw 2 title 'TP steps/s', 'modes.dat' using 1:3 with lines lw 2 title 'SP steps/s'
