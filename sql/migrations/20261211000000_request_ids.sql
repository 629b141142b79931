-- The moderation log names the request that made each change (Envoy's x-request-id, which the services
-- set as `localplus.request_id` in every request transaction and write in their logs), so an entry leads
-- to the logs and the trace of that request. Null for changes made outside a request (migrations, jobs).
alter table public.event_moderation_log
  add column if not exists request_id text default nullif(current_setting('localplus.request_id', true), '');
