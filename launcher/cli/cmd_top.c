/* vrt top: a live view of the VMs, one row each, sorted by a column the
 * user picks; the numbers come from the same samples as `vrt stats`. */
#include <curses.h>
#include <errno.h>
#include <getopt.h>
#include <locale.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "launcher/cli/cli.h"
#include "launcher/cli/statsview.h"
#include "launcher/core/util.h"

#define USAGE "usage: vrt top [NAME...] [--interval S] [--sort cpu|mem|disk|net|name]"

enum sort_key { SORT_CPU, SORT_MEM, SORT_DISK, SORT_NET, SORT_NAME, _SORT_MAX };
static const char *const sort_names[_SORT_MAX] = { "cpu", "mem", "disk", "net", "name" };

static double disk_rate(const struct stats_vm *v) { return v->disk_rd_rate + v->disk_wr_rate; }
static double net_rate(const struct stats_vm *v) { return v->net_rx_rate + v->net_tx_rate; }

static enum sort_key current_sort;

/* Largest first; VMs without numbers last; ties by name. */
static int compare(const void *a, const void *b) {
        const struct stats_vm *x = a, *y = b;
        double kx = 0, ky = 0;
        if (current_sort != SORT_NAME) {
                if (x->responding != y->responding)
                        return x->responding ? -1 : 1;
                switch (current_sort) {
                case SORT_CPU: kx = x->cpu_percent; ky = y->cpu_percent; break;
                case SORT_MEM: kx = (double)x->rss_bytes; ky = (double)y->rss_bytes; break;
                case SORT_DISK: kx = disk_rate(x); ky = disk_rate(y); break;
                case SORT_NET: kx = net_rate(x); ky = net_rate(y); break;
                default: break;
                }
                if (kx != ky)
                        return kx > ky ? -1 : 1;
        }
        return strcmp(x->name, y->name);
}

/* A line cut at the terminal's width: a narrow terminal loses the right
 * columns instead of wrapping every row. */
static void put_line(int y, const char *text, int cols) {
        if (cols > 0)
                mvaddnstr(y, 0, text, cols);
}

static void draw(struct statsview *s, double interval, const char *note) {
        char line[256], up[24];
        time_t t = time(NULL);
        struct tm tm;
        int rows = getmaxy(stdscr), cols = getmaxx(stdscr);
        erase();
        localtime_r(&t, &tm);
        strftime(up, sizeof up, "%H:%M:%S", &tm);
        size_t running = 0;
        for (size_t i = 0; i < s->n_vms; i++)
                running += s->vms[i].running;
        snprintf(line, sizeof line, "vrt top - %s  %zu VMs, %zu running  every %.1fs  sorted by %s", up, s->n_vms,
                 running, interval, sort_names[current_sort]);
        put_line(0, line, cols);
        put_line(1, note && *note ? note : "keys: c cpu  m mem  d disk  n net  a name  +/- interval  q quit", cols);
        /* 77 columns, so an 80-column terminal never wraps: names are cut at 13. */
        attron(A_REVERSE);
        snprintf(line, sizeof line, "%-13s %-9s %5s %4s %6s %6s %6s %6s %6s %7s", "NAME", "STATE", "%CPU", "CPUS",
                 "MEM", "DISK-R", "DISK-W", "NET-RX", "NET-TX", "UPTIME");
        put_line(3, line, cols);
        attroff(A_REVERSE);
        qsort(s->vms, s->n_vms, sizeof *s->vms, compare);
        for (size_t i = 0; i < s->n_vms && (int)i + 4 < rows; i++) {
                const struct stats_vm *v = &s->vms[i];
                char pct[16] = "-", cpus[8] = "-", mem[16] = "-", dr[16] = "-", dw[16] = "-", nr[16] = "-", nt[16] = "-";
                up[0] = '-';
                up[1] = '\0';
                if (v->responding) {
                        snprintf(cpus, sizeof cpus, "%u", v->vcpus);
                        statsview_bytes((double)v->rss_bytes, mem, sizeof mem);
                        if (v->has_rates) {
                                bool net = false;
                                for (unsigned k = 0; k < v->n_nics; k++)
                                        net |= v->nics[k].has_counters;
                                snprintf(pct, sizeof pct, "%.0f", v->cpu_percent);
                                statsview_bytes(v->n_disks ? v->disk_rd_rate : -1, dr, sizeof dr);
                                statsview_bytes(v->n_disks ? v->disk_wr_rate : -1, dw, sizeof dw);
                                statsview_bytes(net ? v->net_rx_rate : -1, nr, sizeof nr);
                                statsview_bytes(net ? v->net_tx_rate : -1, nt, sizeof nt);
                        }
                }
                if (v->uptime >= 0) {
                        long long u = v->uptime;
                        if (u >= 86400)
                                snprintf(up, sizeof up, "%lldd%02lldh", u / 86400, u % 86400 / 3600);
                        else if (u >= 3600)
                                snprintf(up, sizeof up, "%lldh%02lldm", u / 3600, u % 3600 / 60);
                        else
                                snprintf(up, sizeof up, "%lldm%02llds", u / 60, u % 60);
                }
                snprintf(line, sizeof line, "%-13.13s %-9.9s %5s %4s %6s %6s %6s %6s %6s %7s", v->name,
                         v->running && !v->responding ? "no-answer" : v->state, pct, cpus, mem, dr, dw, nr, nt, up);
                put_line((int)i + 4, line, cols);
        }
        refresh();
}

int cmd_top(struct cli *cli, int argc, char **argv) {
        static const struct option opts[] = {
                { "interval", required_argument, NULL, 'i' },
                { "sort", required_argument, NULL, 's' },
                { "help", no_argument, NULL, 'h' },
                { 0 },
        };
        double interval = 2;
        char err[512], note[128] = "";
        struct statsview s;
        int c, r;
        opterr = 0;     /* one line of our own for a bad option */
        current_sort = SORT_CPU;
        while ((c = getopt_long(argc, argv, "+i:s:h", opts, NULL)) >= 0)
                switch (c) {
                case 'i':
                        if (statsview_parse_interval(optarg, &interval) < 0) {
                                cli_error("--interval: \"%s\" is not a number of seconds from 0.1 to 3600", optarg);
                                return CLI_INVALID;
                        }
                        break;
                case 's': {
                        int k;
                        for (k = 0; k < _SORT_MAX && strcmp(optarg, sort_names[k]) != 0; k++)
                                ;
                        if (k == _SORT_MAX) {
                                cli_error("--sort: \"%s\" is none of cpu, mem, disk, net, name", optarg);
                                return CLI_INVALID;
                        }
                        current_sort = (enum sort_key)k;
                        break;
                }
                case 'h':
                        printf(USAGE "\n"
                               "A live view of the VMs' CPU, memory, disk and network use (all but destroyed\n"
                               "ones without NAME), refreshed every S seconds (default 2). Keys: c, m, d, n, a\n"
                               "sort by CPU, memory, disk, network, name; + and - change the interval; q quits.\n");
                        return CLI_OK;
                default:
                        cli_error("%s: bad option \"%s\" (%s)", argv[0], argv[optind - 1], USAGE);
                        return CLI_INVALID;
                }
        if (cli->json) {
                cli_error("vrt top has no --json; use vrt stats --json --interval S");
                return CLI_INVALID;
        }
        r = statsview_init(&s, cli, argc - optind, argv + optind, err, sizeof err);
        if (r < 0) {
                cli_error("%s", err);
                return cli_status_for(r);
        }
        setlocale(LC_ALL, "");
        if (!newterm(NULL, stdout, stdin)) {
                cli_error("cannot use the terminal (TERM=%s)", getenv("TERM") ? getenv("TERM") : "");
                statsview_done(&s);
                return CLI_FAILED;
        }
        cbreak();
        noecho();
        curs_set(0);
        keypad(stdscr, TRUE);
        int status = CLI_OK;
        bool quit = false;
        while (!quit) {
                if (statsview_sample(&s, cli) < 0) {
                        status = CLI_FAILED;
                        break;
                }
                draw(&s, interval, note);
                int64_t next = now_ms() + (int64_t)(interval * 1000);
                for (;;) {
                        int64_t left = next - now_ms();
                        if (left <= 0)
                                break;
                        timeout((int)left);
                        int key = getch();
                        bool redraw = true;
                        note[0] = '\0';
                        switch (key) {
                        case ERR: redraw = false; break;
                        case 'q': case 'Q': quit = true; break;
                        case 'c': case 'P': current_sort = SORT_CPU; break;
                        case 'm': case 'M': current_sort = SORT_MEM; break;
                        case 'd': current_sort = SORT_DISK; break;
                        case 'n': current_sort = SORT_NET; break;
                        case 'a': case 'N': current_sort = SORT_NAME; break;
                        case '+': interval = interval * 2 > 3600 ? 3600 : interval * 2; break;
                        case '-': interval = interval / 2 < 0.1 ? 0.1 : interval / 2; break;
                        case KEY_RESIZE: break;
                        default:
                                snprintf(note, sizeof note, "unknown key; c m d n a sort, + - interval, q quits");
                                break;
                        }
                        if (quit)
                                break;
                        if (redraw)
                                draw(&s, interval, note);
                }
        }
        endwin();
        statsview_done(&s);
        if (status != CLI_OK)
                cli_error("out of memory");
        return status;
}
