// SPDX-License-Identifier: GPL-2.0
/* The shipped firewall with one more counter field, for tests/test_upgrade.py:
 * a new build whose per-rule counters must be migrated during a live upgrade
 * ("packets" and "bytes" carried over, "packets_v2" starting at 0). */
#define FIREWALL_COUNTER_EXTRA __u64 packets_v2;
#define FIREWALL_COUNT_EXTRA(c) ((c)->packets_v2++)
#include "firewall.bpf.c"
