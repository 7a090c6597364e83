/* vrt stats: what the VMs use — CPU, memory, disks, NICs — once, as rates
 * over an interval, as JSON or in Prometheus' text format. */
#include <errno.h>
#include <getopt.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "launcher/cli/cli.h"
#include "launcher/cli/statsview.h"

#define USAGE "usage: vrt stats [NAME...] [--interval S] [--json | --prometheus]"

static void print_table(const struct statsview *s, bool rates) {
        printf("%-20s %-12s %6s %5s %9s %6s %7s %7s %7s %7s %s\n", "NAME", "STATE", "CPU%", "VCPUS", "CPU-TIME",
               "RSS", rates ? "DISK-R/s" : "DISK-RD", rates ? "DISK-W/s" : "DISK-WR",
               rates ? "NET-RX/s" : "NET-RX", rates ? "NET-TX/s" : "NET-TX", "UPTIME");
        for (size_t i = 0; i < s->n_vms; i++) {
                const struct stats_vm *v = &s->vms[i];
                char pct[16] = "-", vcpus[16] = "-", cpu[24] = "-", rss[16] = "-", up[24] = "-";
                char dr[16] = "-", dw[16] = "-", nr[16] = "-", nt[16] = "-";
                if (v->responding) {
                        double rd = 0, wr = 0, rx = 0, tx = 0;
                        bool has_net = false;
                        for (unsigned k = 0; k < v->n_disks; k++) {
                                rd += rates ? v->disks[k].rd_bytes_rate : (double)v->disks[k].rd_bytes;
                                wr += rates ? v->disks[k].wr_bytes_rate : (double)v->disks[k].wr_bytes;
                        }
                        for (unsigned k = 0; k < v->n_nics; k++)
                                if (v->nics[k].has_counters) {
                                        has_net = true;
                                        rx += rates ? v->nics[k].rx_bytes_rate : (double)v->nics[k].rx_bytes;
                                        tx += rates ? v->nics[k].tx_bytes_rate : (double)v->nics[k].tx_bytes;
                                }
                        if (v->has_rates)
                                snprintf(pct, sizeof pct, "%.1f", v->cpu_percent);
                        snprintf(vcpus, sizeof vcpus, "%u", v->vcpus);
                        snprintf(cpu, sizeof cpu, "%.2fs", stats_ticks_to_seconds(v->vcpu_ticks));
                        statsview_bytes((double)v->rss_bytes, rss, sizeof rss);
                        if (!rates || v->has_rates) {
                                statsview_bytes(v->n_disks ? rd : -1, dr, sizeof dr);
                                statsview_bytes(v->n_disks ? wr : -1, dw, sizeof dw);
                                statsview_bytes(has_net ? rx : -1, nr, sizeof nr);
                                statsview_bytes(has_net ? tx : -1, nt, sizeof nt);
                        }
                }
                if (v->uptime >= 0)
                        snprintf(up, sizeof up, "%llds", v->uptime);
                printf("%-20s %-12s %6s %5s %9s %6s %7s %7s %7s %7s %s", v->name,
                       v->running && !v->responding ? "no-answer" : v->state,
                       pct, vcpus, cpu, rss, dr, dw, nr, nt, up);
                if (v->running && !v->responding)
                        printf("  (%s)", v->error);
                printf("\n");
        }
}

int cmd_stats(struct cli *cli, int argc, char **argv) {
        static const struct option opts[] = {
                { "interval", required_argument, NULL, 'i' },
                { "prometheus", no_argument, NULL, 'p' },
                { "help", no_argument, NULL, 'h' },
                { 0 },
        };
        double interval = 0;
        bool prometheus = false;
        char err[512];
        struct statsview s;
        int c, r;
        opterr = 0;     /* one line of our own for a bad option */
        while ((c = getopt_long(argc, argv, "+i:ph", opts, NULL)) >= 0)
                switch (c) {
                case 'i':
                        if (statsview_parse_interval(optarg, &interval) < 0) {
                                cli_error("--interval: \"%s\" is not a number of seconds from 0.1 to 3600", optarg);
                                return CLI_INVALID;
                        }
                        break;
                case 'p':
                        prometheus = true;
                        break;
                case 'h':
                        printf(USAGE "\n"
                               "Shows CPU, memory, disk and network use of the VMs (all but destroyed ones\n"
                               "without NAME). Counters are totals since QEMU started; with --interval S,\n"
                               "two samples S seconds apart give CPU %% and rates. --prometheus writes the\n"
                               "Prometheus text format (counters; Prometheus computes the rates).\n");
                        return CLI_OK;
                default:
                        cli_error("%s: bad option \"%s\" (%s)", argv[0], argv[optind - 1], USAGE);
                        return CLI_INVALID;
                }
        if (prometheus && (cli->json || interval > 0)) {
                cli_error("--prometheus goes with neither --json nor --interval");
                return CLI_INVALID;
        }
        r = statsview_init(&s, cli, argc - optind, argv + optind, err, sizeof err);
        if (r < 0) {
                cli_error("%s", err);
                return cli_status_for(r);
        }
        r = statsview_sample(&s, cli);
        if (r == 0 && interval > 0) {
                struct timespec ts = { (time_t)interval, (long)((interval - (double)(time_t)interval) * 1e9) };
                while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                        ;
                r = statsview_sample(&s, cli);
        }
        if (r < 0) {
                cli_error("out of memory");
                statsview_done(&s);
                return CLI_FAILED;
        }
        int status = CLI_OK;
        for (size_t i = 0; i < s.n_vms; i++)
                if (s.vms[i].running && !s.vms[i].responding)
                        status = CLI_FAILED;
        if (prometheus) {
                char *text = stats_prometheus(s.vms, s.n_vms);
                if (!text) {
                        cli_error("out of memory");
                        status = CLI_FAILED;
                } else {
                        fputs(text, stdout);
                        free(text);
                }
        } else if (cli->json) {
                json_object *arr = json_object_new_array();
                for (size_t i = 0; i < s.n_vms; i++)
                        json_object_array_add(arr, stats_to_json(&s.vms[i]));
                printf("%s\n", json_object_to_json_string_ext(arr, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
                json_object_put(arr);
        } else {
                print_table(&s, interval > 0);
        }
        statsview_done(&s);
        return status;
}
