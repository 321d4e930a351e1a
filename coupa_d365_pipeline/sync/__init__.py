"""The per-document sync core (plain Python): the same path serves daily partitions, sensor runs
for a handful of Coupa ids, range backfills and replays."""
