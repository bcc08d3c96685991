set terminal pngcairo size 900,500
set grid
set key bottom right
set logscale x
set xlabel 'ms'
set ylabel 'fraction of requests'
set output 'ttft_compare.png'
set title 'ttft by configuration'
plot 'tp/ttft_cdf.dat' using 1:2 with lines lw 2 title 'tp', 'sp/ttft_cdf.dat' using 1:2 with lines lw 2 title 'sp', 'shift/ttft_cdf.dat' using 1:2 with lines lw 2 title 'shift', 'dp/ttft_cdf.dat' using 1:2 with lines lw 2 title 'dp'
set output 'e2e_compare.png'
set title 'e2e by configuration'
plot 'tp/e2e_cdf.dat' using 1:2 with lines lw 2 title 'tp', 'sp/e2e_cdf.dat' using 1:2 with lines lw 2 title 'sp', 'shift/e2e_cdf.dat' using 1:2 with lines lw 2 title 'shift', 'dp/e2e_cdf.dat' using 1:2 with lines lw 2 title 'dp'
