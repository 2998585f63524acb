#!/bin/bash
# ct-states.sh - count tracked connections per state (a 2004-era monitoring script).
# Reads /proc/net/ip_conntrack directly; prints "STATE count" lines sorted by state,
# then the number of ASSURED and UNREPLIED entries and the total.
CT=/proc/net/ip_conntrack

# TCP lines carry their state in the 4th field; other protocols have none.
grep '^tcp' $CT | awk '{ print $4 }' | sort | uniq -c | awk '{ printf "%s %d\n", $2, $1 }'
echo "UDP `grep -c '^udp' $CT`"
echo "ICMP `grep -c '^icmp' $CT`"
echo "ASSURED `grep -c ASSURED $CT`"
echo "UNREPLIED `grep -c UNREPLIED $CT`"
echo "TOTAL `wc -l < $CT`"
