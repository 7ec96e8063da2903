-- Argo CD health check for nimify.dev/NimService (argocd-cm key:
-- resource.customizations.health.nimify.dev_NimService). It reads the kstatus-style conditions the
-- operator writes: Stalled means a dead end until the spec changes, Reconciling means work under way,
-- Ready summarises; status.observedGeneration tells whether the operator has seen the current spec.
-- A canary rollout (status.rollout) keeps Ready True while the serving engine serves, so its phase tells
-- whether the spec's engine is in yet, and whether the current spec's candidate was rolled back.
local hs = {}

local function condition(conditions, kind)
  for _, c in ipairs(conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function describe(c)
  if c.message ~= nil and c.message ~= "" then
    return c.reason .. ": " .. c.message
  end
  return c.reason
end

local generation = obj.metadata.generation or 0
local status = obj.status
if status == nil or status.conditions == nil or #status.conditions == 0 then
  hs.status = "Progressing"
  hs.message = "Waiting for the Nimify operator to report status"
  return hs
end
if (status.observedGeneration or 0) < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the Nimify operator to observe generation " .. generation
  return hs
end

local ready = condition(status.conditions, "Ready")
local reconciling = condition(status.conditions, "Reconciling")
local stalled = condition(status.conditions, "Stalled")

if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = describe(stalled)
  return hs
end
if reconciling ~= nil and reconciling.status == "False" and reconciling.reason == "Paused" then
  hs.status = "Suspended"
  hs.message = describe(reconciling)
  return hs
end
local rollout = status.rollout
if rollout ~= nil then
  local phase = rollout.phase or ""
  local said = "Rollout " .. phase .. ": " .. (rollout.message or "")
  if phase == "Progressing" or phase == "Paused" or phase == "Promoting" then
    hs.status = "Progressing"
    hs.message = said
    if ready ~= nil and ready.status ~= "True" then
      hs.message = said .. "; " .. describe(ready)
    end
    return hs
  end
  -- A rollback of an earlier generation's candidate is history: the spec has changed since.
  if phase == "RolledBack" and rollout.generation == generation then
    hs.status = "Degraded"
    hs.message = said
    return hs
  end
end
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = describe(ready)
  return hs
end
hs.status = "Progressing"
if ready ~= nil then
  hs.message = describe(ready)
else
  hs.message = "Waiting for the Ready condition"
end
return hs
