#!/usr/bin/perl -w
# ct-parse.pl - parse /proc/net/ip_conntrack with one regular expression per line and
# print each connection as "proto src:sport -> dst:dport STATE [flags]", sorted.
# (The style of the era's log-analysis scripts; ports are "-" for portless protocols.)
use strict;

my $file = shift || '/proc/net/ip_conntrack';
open(CT, "<$file") or die "cannot open $file: $!\n";
my @out;
while (my $line = <CT>) {
    chomp $line;
    next unless $line =~ /^(\w+)\s+(\d+)\s+(\d+)\s+(?:([A-Z_]+)\s+)?src=(\S+)\s+dst=(\S+)\s+(?:sport=(\d+)\s+dport=(\d+)\s+)?/;
    my ($proto, $src, $dst) = ($1, $5, $6);
    my $state = defined $4 ? $4 : '-';
    my ($sport, $dport) = (defined $7 ? $7 : '-', defined $8 ? $8 : '-');
    my @flags = ($line =~ /\[(\w+)\]/g);
    push @out, sprintf("%s %s:%s -> %s:%s %s%s", $proto, $src, $sport, $dst, $dport, $state,
                       @flags ? ' ' . join(',', @flags) : '');
}
close(CT);
print "$_\n" for sort @out;
