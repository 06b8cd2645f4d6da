<#
.SYNOPSIS
    Installs the llama-orchestrator daemon as a Windows autostart service.

.DESCRIPTION
    Calls `llama-orch service install --platform windows --kind <Kind>` through
    llama.ps1 (which finds the Python environment), so the daemon - and with it every
    instance marked "autostart" - starts at logon (task) or at boot (nssm / winsw).
      task   a Task Scheduler task with a logon trigger, registered with schtasks
             (no administrator rights needed)
      nssm   writes a .cmd of `nssm install/set` lines to run in an elevated prompt
      winsw  writes a WinSW service definition (llama-orchestrator.xml)

.PARAMETER Kind
    task (default), nssm or winsw.

.PARAMETER DryRun
    Print what would be written and run; change nothing.

.PARAMETER Workspace
    The workspace folder (passed as --home); default: llama-orch's own default.

.PARAMETER Uninstall
    Remove the service definition instead.

.EXAMPLE
    .\scripts\install-service.ps1 -DryRun
    .\scripts\install-service.ps1 -Kind nssm
#>
[CmdletBinding()]
param(
    [ValidateSet('task', 'nssm', 'winsw')]
    [string]$Kind = 'task',
    [switch]$DryRun,
    [string]$Workspace,
    [switch]$Uninstall
)
$ErrorActionPreference = 'Stop'

$wrapper = Join-Path -Path $PSScriptRoot -ChildPath 'llama.ps1'
$cli = @()
if ($Workspace) { $cli += @('--home', $Workspace) }
$action = if ($Uninstall) { 'uninstall' } else { 'install' }
$cli += @('service', $action, '--platform', 'windows', '--kind', $Kind)
if ($DryRun) { $cli += '--dry-run' }

& $wrapper @cli
exit $LASTEXITCODE
