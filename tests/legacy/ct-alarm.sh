#!/bin/sh
# ct-alarm.sh - run from cron every 5 minutes: warn when the conntrack table nears its limit.
#   */5 * * * * root /usr/local/sbin/ct-alarm.sh || mail -s "conntrack" root
# Exit 0 and "OK" below the threshold; exit 1 and "WARNING" at or above it.
THRESHOLD=${THRESHOLD:-80}      # percent

count=`wc -l < /proc/net/ip_conntrack`
max=`cat /proc/sys/net/ipv4/ip_conntrack_max`
percent=`expr $count \* 100 / $max`
if [ $percent -ge $THRESHOLD ]; then
    echo "WARNING: ip_conntrack table $count/$max ($percent%)"
    logger -t ct-alarm "table $count/$max ($percent%)" 2>/dev/null
    exit 1
fi
echo "OK: ip_conntrack table $count/$max ($percent%)"
exit 0
