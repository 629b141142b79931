-- Moving an event between businesses takes its owner.
--
-- An editor of an event (an event_permissions editor, or an editor partner of its business) who was
-- an owner or editor partner of another business could move the event there (the check looked at
-- the business it moved to only) and so became its owner: then revoke others' permissions, cancel or
-- delete it, and the first business's owners lost every right to it. Changing `business_id`, to
-- another business or to none, now takes owner rank on the event (its creator, an owner permission,
-- an owner partner of its business, platform admins and the server), besides owner or editor rights
-- in the business it moves to. The rest of the function is as in 20261201000000_hardening.sql.

create or replace function localplus_private.events_before_write() returns trigger
  language plpgsql
  set search_path = ''
  as $$
declare
  v_privileged boolean := localplus_private.is_privileged();
  v_request boolean := localplus_private.in_request();
  v_old_status text := case when tg_op = 'UPDATE' then old.status end;
begin
  if tg_op = 'INSERT' then
    new.version := 1;
    if v_request then
      new.created_at := now();
      new.submitted_at := null;
      new.published_at := null;
    end if;
  else
    new.id := old.id;
    new.created_by := old.created_by;
    new.version := old.version + 1;
    if v_request then
      new.created_at := old.created_at;
      new.submitted_at := old.submitted_at;
      new.published_at := old.published_at;
    end if;
    if not v_privileged then
      new.source := old.source;
      if old.status = 'cancelled' then
        raise exception 'a cancelled event can no longer be changed'
          using errcode = 'P0001', hint = 'INVALID_STATE';
      end if;
      -- Moving an event to another business (or out of one) changes who owns it: it takes the event's
      -- owner, and owner/editor rights in the business it moves to.
      if new.business_id is distinct from old.business_id then
        if localplus_private.event_role_rank(old.id) < 4 then
          raise exception 'only the event''s owners may move it to another business'
            using errcode = 'insufficient_privilege';
        end if;
        if new.business_id is not null
           and not localplus_private.is_business_partner(new.business_id, array['owner', 'editor']) then
          raise exception 'only owner or editor partners of a business may move events to it'
            using errcode = 'insufficient_privilege';
        end if;
      end if;
    end if;
  end if;
  new.updated_at := now();
  new.search_keywords := lower(concat_ws(' ', new.title, new.category, array_to_string(new.tags, ' '),
                                         new.venue_name, new.city));
  new.search_text := concat_ws(' ', new.search_keywords, lower(left(new.description, 2000)));
  if tg_op = 'UPDATE' and not v_privileged and old.status = 'published' and new.status = 'published'
     and localplus_private.event_needs_review(old, new) then
    new.status := 'pending_review';
  end if;
  if new.status is not distinct from v_old_status then
    new.status_reason := old.status_reason;
    return new;
  end if;
  -- A status change: check it is allowed for this caller.
  if not v_privileged then
    if new.status = 'published' then
      raise exception 'only platform admins publish events; submit it for review instead'
        using errcode = 'insufficient_privilege';
    end if;
    if new.status = 'rejected' then
      raise exception 'only platform admins reject events' using errcode = 'insufficient_privilege';
    end if;
    if not (
      (v_old_status is null and new.status in ('draft', 'pending_review'))
      or (v_old_status in ('draft', 'rejected') and new.status = 'pending_review')
      or (v_old_status = 'published' and new.status = 'pending_review')
      or (v_old_status = 'pending_review' and new.status = 'draft')
      or (v_old_status <> 'cancelled' and new.status = 'cancelled'
          and localplus_private.event_role_rank(new.id) >= 4)
    ) then
      raise exception 'an event cannot go from % to % this way', coalesce(v_old_status, 'nothing'), new.status
        using errcode = 'P0001', hint = 'INVALID_STATE';
    end if;
  end if;
  if new.status = 'rejected' and coalesce(btrim(new.status_reason), '') = '' then
    raise exception 'a rejection needs a reason' using errcode = 'check_violation',
      constraint = 'events_status_reason_check';
  end if;
  if new.status not in ('rejected', 'cancelled')
     or (tg_op = 'UPDATE' and new.status_reason is not distinct from old.status_reason) then
    new.status_reason := null;
  end if;
  if new.status = 'pending_review' then
    new.submitted_at := now();
  end if;
  -- published_at vouches for the text as reviewed: set on publishing, gone once the event is back
  -- in review (or a draft), kept on cancelling a published event so that it stays readable.
  if new.status = 'published' then
    new.published_at := coalesce(new.published_at, now());
  elsif new.status in ('draft', 'pending_review', 'rejected') then
    new.published_at := null;
  end if;
  return new;
end
$$;

