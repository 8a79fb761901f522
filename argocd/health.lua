-- Argo CD health check for dirsync.io/DirectorySync (resource.customizations.health.dirsync.io_DirectorySync).
--
-- Maps the kstatus-style conditions the operator writes (Ready, Reconciling, Stalled) and
-- status.observedGeneration to Argo CD's health:
--   Progressing  no status yet, a spec change not yet run (observedGeneration < generation),
--                or a run in progress / being retried while not Ready;
--   Degraded     Stalled=True (e.g. InvalidCredentials, SecretNotFound, DeletionThresholdExceeded)
--                or Ready=False (e.g. PartiallyFailed, SourceUnavailable);
--   Healthy      Ready=True (PreviewReady or Synced). A Periodic resource stays Healthy while
--                its next run is in progress, so an Argo CD application does not flap each hour.
--   Suspended    Ready=False waiting for an approved preview (AwaitingApproval, and the refused
--                approvals ApprovalConsumed, ApprovalExpired, PreviewChanged): nothing is wrong,
--                a person has to review the pending preview and set spec.approvedPreview.
-- Messages carry the condition reason and message (never user data: the operator keeps those
-- out of status).
local hs = {}

local function condition(conditions, ctype)
  if conditions == nil then
    return nil
  end
  for _, c in ipairs(conditions) do
    if c.type == ctype then
      return c
    end
  end
  return nil
end

local function describe(c)
  if c == nil then
    return ""
  end
  local reason = c.reason or ""
  if c.message ~= nil and c.message ~= "" then
    return reason .. ": " .. c.message
  end
  return reason
end

if obj.status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the dirsync operator to run this resource"
  return hs
end

local generation = obj.metadata and obj.metadata.generation or nil
local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for a run of generation " .. tostring(generation)
  return hs
end

local conditions = obj.status.conditions
local ready = condition(conditions, "Ready")
local reconciling = condition(conditions, "Reconciling")
local stalled = condition(conditions, "Stalled")

local awaiting = {
  AwaitingApproval = true, ApprovalConsumed = true, ApprovalExpired = true, PreviewChanged = true,
}
if ready ~= nil and ready.status == "False" and awaiting[ready.reason] and
    (reconciling == nil or reconciling.status ~= "True") then
  hs.status = "Suspended"
  hs.message = describe(ready)
  return hs
end

if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = describe(stalled)
  return hs
end

if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  local msg = describe(ready)
  local run = obj.status.lastRun
  if run ~= nil then
    msg = msg .. string.format(" (last run: %d adds, %d updates, %d deletes)",
      run.adds or 0, run.updates or 0, run.deletes or 0)
  end
  if reconciling ~= nil and reconciling.status == "True" then
    msg = msg .. "; a run is in progress"
  end
  hs.message = msg
  return hs
end

if reconciling ~= nil and reconciling.status == "True" and (reconciling.reason == "Running" or ready == nil or ready.status ~= "False") then
  hs.status = "Progressing"
  hs.message = describe(reconciling)
  return hs
end

if ready ~= nil and ready.status == "False" then
  hs.status = "Degraded"
  hs.message = describe(ready)
  return hs
end

hs.status = "Progressing"
hs.message = "Waiting for the Ready condition"
return hs
