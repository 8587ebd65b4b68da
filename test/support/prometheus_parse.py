"""Parses a Prometheus text exposition file with the prometheus_client
package's parser (a real consumer of the format) and prints what it read,
a line each, strings hex-encoded (no JSON library on the Elixir side):

    F <family name> <type> <help, hex>
    S <sample name> <value> <label>=<value, hex>,...
"""
import sys

from prometheus_client.parser import text_string_to_metric_families


def hexed(s):
    return s.encode("utf-8").hex()


with open(sys.argv[1], encoding="utf-8") as f:
    text = f.read()

for family in text_string_to_metric_families(text):
    print("F", family.name, family.type, hexed(family.documentation) or "-")
    for s in family.samples:
        labels = ",".join(f"{k}={hexed(v)}" for k, v in sorted(s.labels.items()))
        print("S", s.name, repr(float(s.value)), labels or "-")
