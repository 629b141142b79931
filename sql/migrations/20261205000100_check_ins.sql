-- Check-in: scans uploaded by scanners that worked offline are marked as such, and one offline scan
-- (the same ticket, device and scan time) is recorded once however often it is uploaded, so a
-- scanner that never got the answer to an upload can simply send it again.
--
-- Online scans are not deduplicated: their scanned_at is the server's clock, and two of them may
-- share a microsecond. Scans of forged codes have no ticket: NULLS NOT DISTINCT keeps them in the key.

alter table public.check_ins add column if not exists offline boolean not null default false;

create unique index if not exists check_ins_offline_scan_key
  on public.check_ins (event_id, ticket_id, device_id, scanned_at) nulls not distinct
  where offline;
