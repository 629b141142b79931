-- One's own registration is for published events only, whatever one's rank on the event (CONTRACT §3).
--
-- The policies let editors and up (owners, the creator, business partners, platform admins) write any
-- registration, their own included, so the owner of a draft could register for it, or set their own
-- registration back to going once the event had gone back to draft or been cancelled, while a viewer
-- was refused. Editors keep managing other people's registrations on any event they edit (the
-- notifications worker counts on it: README, Notifications); their own active registration now needs
-- a published event, as everyone's does. Cancelling one's own stays allowed on any event, and so
-- does deleting it (event_participants_delete is unchanged), so nobody is kept in a registration.
--
-- The event's status is read through its own policies (SECURITY INVOKER): an editor sees every
-- event they edit. No new function, so no new grants.

drop policy if exists event_participants_create on public.event_participants;
create policy event_participants_create on public.event_participants for insert to authenticated
  with check (
    (localplus_private.event_role_rank(event_id) >= 3
     and (user_id is distinct from (select auth.uid())
          or exists (select 1 from public.events e
                      where e.id = event_participants.event_id and e.status = 'published')))
    or (user_id = (select auth.uid()) and status in ('going', 'interested', 'waitlisted')
        and localplus_private.event_accepts_registrations(event_id))
  );

drop policy if exists event_participants_update on public.event_participants;
create policy event_participants_update on public.event_participants for update to authenticated
  using (user_id = (select auth.uid()) or localplus_private.event_role_rank(event_id) >= 3)
  with check (
    (localplus_private.event_role_rank(event_id) >= 3
     and (user_id is distinct from (select auth.uid())
          or status = 'cancelled'
          or exists (select 1 from public.events e
                      where e.id = event_participants.event_id and e.status = 'published')))
    or (user_id = (select auth.uid())
        and (status = 'cancelled'
             or (status in ('going', 'interested', 'waitlisted')
                 and localplus_private.event_accepts_registrations(event_id))))
  );
